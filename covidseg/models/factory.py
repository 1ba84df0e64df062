"""One factory maps an architecture name to a network, as smp's ``create_model`` does.

* any segmentation-models-pytorch architecture (``unet``, ``unetplusplus``, ``fpn``,
  ``deeplabv3plus``, ``manet``, ``linknet``, ``pspnet``, ``pan``, ``upernet``, ``segformer``, …)
  with any of its encoders;
* ``attention-unet`` — U-Net with Oktay additive attention gates (smp has none);
* ``unet3d`` — a small 3D U-Net for the coarse 3D segmentation;
* ``genesis-unet`` — the 2D twin of the Models Genesis UNet3D (``init`` from its 3D weights);
* any architecture added with :func:`register_architecture` (covidseg's own three are).

:func:`architectures` is that one mapping, name → :class:`Architecture`; every network it builds
carries its :class:`~covidseg.models.network.NetworkTraits` (:mod:`covidseg.models.network`).

Nothing is ever downloaded: smp is always called with ``encoder_weights=None`` and encoder weights
come only from a local file (``encoder_weights=/path/to/state_dict.pt``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from covidseg.base.errors import ConfigError, first_line
from covidseg.models.network import Network, NetworkTraits
from covidseg.models.vocabulary import Arch


def smp_architectures() -> dict[str, str]:
    import segmentation_models_pytorch as smp

    return {cls.__name__.lower(): cls.__name__ for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()}


@dataclass
class ModelSpec:
    """Everything needed to rebuild a network from a state dict (stored as JSON with it)."""

    arch: str = "unet"
    encoder: str = "resnet34"
    in_channels: int = 1
    classes: int = 1
    members: int = 1  # > 1: an ensemble of that many such networks (models/ensemble.py)

    def to_dict(self) -> dict:
        return asdict(self)

    def member(self) -> ModelSpec:
        """The spec of one member network."""
        return ModelSpec(self.arch, self.encoder, self.in_channels, self.classes)


def build_model(spec: ModelSpec, encoder_weights: str | None = None) -> Network:
    """The network of ``spec`` with random weights (or a local encoder weight file), with its
    traits (``classes``: 1, one lesion logit, sigmoid; > 1, softmax over background + lesion
    classes)."""
    if spec.members > 1:
        from covidseg.models.ensemble import EnsembleNet

        return EnsembleNet([_build(spec.member(), encoder_weights)
                            for _ in range(spec.members)])
    return _build(spec, encoder_weights)


@dataclass(frozen=True)
class Architecture:
    """A network covidseg builds itself: ``build(spec)`` makes it with random weights;
    ``encoder_weights``: it has an smp-style ``encoder`` a local weight file can fill."""

    build: Callable[[ModelSpec], nn.Module]
    encoder_weights: bool = True


# covidseg's own architectures by name (``arch=``); :func:`architectures` adds smp's
ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(name: str, encoder_weights: bool = True):
    """Decorator: ``build(spec) -> nn.Module`` becomes ``arch=name`` everywhere (finetune, the
    grid, saved models).  A contract test (tests/unit/models/test_architectures.py) checks any
    architecture in a few lines."""
    def add(build):
        ARCHITECTURES[name] = Architecture(build, encoder_weights)
        return build
    return add


@register_architecture(Arch.ATTENTION_UNET)
def _attention_unet(spec: ModelSpec) -> nn.Module:
    from covidseg.models.attention_unet.model import AttentionUnet

    return _with_encoder_errors(spec, lambda: AttentionUnet(
        encoder_name=spec.encoder, encoder_weights=None, in_channels=spec.in_channels,
        classes=spec.classes))


@register_architecture(Arch.UNET3D, encoder_weights=False)
def _unet3d(spec: ModelSpec) -> nn.Module:
    from covidseg.models.unet3d.model import UNet3D

    return UNet3D(in_channels=spec.in_channels, classes=spec.classes)


@register_architecture(Arch.GENESIS_UNET, encoder_weights=False)
def _genesis_unet(spec: ModelSpec) -> nn.Module:
    from covidseg.models.genesis_unet.model import GenesisUnet

    return GenesisUnet(in_channels=spec.in_channels, classes=spec.classes)


def _smp(arch: str, spec: ModelSpec) -> nn.Module:
    import segmentation_models_pytorch as smp

    return _with_encoder_errors(spec, lambda: smp.create_model(
        arch, encoder_name=spec.encoder, encoder_weights=None, in_channels=spec.in_channels,
        classes=spec.classes))


def architectures() -> dict[str, Architecture]:
    """Every ``arch=`` name and how to build it: smp's architectures, then covidseg's own."""
    return {**{arch: Architecture(partial(_smp, arch)) for arch in smp_architectures()},
            **ARCHITECTURES}


def architecture(name: str) -> Architecture:
    table = architectures()
    entry = table.get(name.lower())
    if entry is None:
        raise ConfigError(f"arch={name!r} is not one of {', '.join(sorted(table))}")
    return entry


def _build(spec: ModelSpec, encoder_weights: str | None) -> Network:
    entry = architecture(spec.arch)
    model = entry.build(spec)
    if not isinstance(model, Network):  # smp's networks, a registered builder's bare module
        model.traits = NetworkTraits(classes=spec.classes)
    if encoder_weights and entry.encoder_weights:
        load_encoder_weights(model, encoder_weights)
    return model


def _with_encoder_errors(spec: ModelSpec, make):
    try:
        return make()
    except (KeyError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"encoder={spec.encoder!r} cannot build arch={spec.arch!r} "
                          f"({first_line(exc, 160)})") from exc


def load_encoder_weights(model: nn.Module, path: str) -> dict:
    """Load a local encoder state dict into ``model.encoder``; returns what was (not) used."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: encoder_weights file does not exist "
                          "(weights are never downloaded)")
    state = torch.load(p, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("module.").removeprefix("encoder."): v for k, v in state.items()}
    own = model.encoder.state_dict()
    adapted = {k: adapt_input_channels(v, own[k].shape[1]) for k, v in state.items()
               if k in own and _differs_in_input_channels(v, own[k])}
    used = {k: v for k, v in {**state, **adapted}.items()
            if k in own and own[k].shape == v.shape}
    if not used:
        raise ConfigError(f"{p}: no tensor matches the {type(model.encoder).__name__} encoder")
    own.update(used)
    model.encoder.load_state_dict(own)
    return {"missing": sorted(set(own) - set(used)), "unused": sorted(set(state) - set(used)),
            "adapted_input_channels": sorted(adapted)}


def _differs_in_input_channels(theirs: torch.Tensor, ours: torch.Tensor) -> bool:
    """A convolution kernel (out, in, k, k) that fits but for its input channels."""
    return (theirs.dim() == 4 and ours.dim() == 4 and theirs.shape[1] != ours.shape[1]
            and theirs.shape[0] == ours.shape[0] and theirs.shape[2:] == ours.shape[2:])


def adapt_input_channels(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """A first-layer kernel trained on ``weight.shape[1]`` input channels (ImageNet: RGB) made to
    take ``channels``: the kernels summed over their inputs (smp's rule for one channel: a grey
    image x fed as RGB (x, x, x) gives exactly the response of x through the summed kernel), and
    for several channels that sum shared equally among them, so that the same image on every
    channel again gives the RGB network's response to it (CT channels are windows of one grey
    image, not colours: smp's cyclic repetition of R, G, B would not keep that response)."""
    summed = weight.sum(dim=1, keepdim=True)
    return summed.repeat(1, channels, 1, 1) / channels
