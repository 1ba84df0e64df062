"""What covidseg needs to know of a network, declared when it is built (the network contract).

Every network the factory builds carries ``traits``, a :class:`NetworkTraits`:

* ``classes`` — output channels: 1 (one lesion logit, sigmoid) or > 1 (softmax over background
  + lesion classes);
* ``volumetric`` — a 3D network that sees a whole volume at once (the coarse 3D U-Net), not slices;
* ``stride`` — a 2D network's input sides must be multiples of it (inference pads to it);
* ``coarse_size`` — a volumetric network's in-plane side: the volume is resampled to it.

covidseg's own architectures (attention U-Net, Genesis U-Net, 3D U-Net, the ensemble) set their
traits in their constructors; the factory gives networks it takes from smp (or from a registered
builder that returns a bare module) theirs as it builds them.  The traits are a plain attribute,
not a buffer: state dicts and saved models do not change.  A module that declares none (a test's
toy network) is a plain 2D one-logit network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from torch import nn

# input sides of smp's encoders (five halvings) must be multiples of this
SMP_STRIDE = 32


@dataclass(frozen=True)
class NetworkTraits:
    classes: int = 1
    volumetric: bool = False
    stride: int = SMP_STRIDE
    coarse_size: int = 0


@runtime_checkable
class Network(Protocol):
    """A covidseg network: an ``nn.Module`` mapping (n, C, …) inputs to (n, classes, …) logits of
    the same spatial size, with its :class:`NetworkTraits`."""

    traits: NetworkTraits

    def __call__(self, x): ...


PLAIN = NetworkTraits()


def traits_of(model: nn.Module) -> NetworkTraits:
    """The network's traits (:data:`PLAIN` for a module that declares none)."""
    return model.traits if isinstance(model, Network) else PLAIN
