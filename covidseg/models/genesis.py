"""Models Genesis 3D → 2D: flatten the released ``Genesis_Chest_CT.pt`` into :class:`GenesisUnet`.

The released checkpoint is a dict with ``state_dict`` whose keys carry DataParallel's ``module.``
prefix and the UNet3D blocks ``down_tr64/128/256/512``, ``up_tr256/128/64`` and
``out_tr.final_conv``.  Its input is ``(N, 1, x, y, z)``: the *last* kernel axis runs across
slices.  Flattening (thesis 5.2) is chosen so that the 2D network answers a slice as the 3D one
answers a volume that is constant across slices:

* 3×3×3 convolutions (padding 1) → the kernel **summed** over its slice axis;
* 2×2×2 transposed convolutions (stride 2) → the kernel **averaged** over its slice axis (each
  output slice of the 3D layer sees exactly one of the two kernel slices);
* batch-norm scale and shift are copied; their running statistics are **skipped**: the released
  model's ``ContBatchNorm3d`` always normalises with batch statistics, so its running buffers never
  described its inputs (the 2D network re-estimates them while fine-tuning);
* the final ``Sigmoid`` has no weights: covidseg networks return logits and the loss applies it.

:func:`flatten_genesis_3d` returns a report of every tensor consumed and every one skipped (and
why), logged with the run.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from covidseg.base.errors import ConfigError, first_line

NORM_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def read_checkpoint_state(path) -> dict:
    """The state dict of a checkpoint file (``state_dict`` entry if wrapped), weights only."""
    p = Path(path)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = first_line(exc, 200)
        raise ConfigError(f"{p}: cannot load checkpoint ({first})") from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"{p}: not a state dict of tensors")
    return obj


def is_genesis_state(state: dict) -> bool:
    return any(k.removeprefix("module.").startswith("down_tr64.") for k in state)


def _target_key(key: str) -> str | None:
    key = key.removeprefix("module.")
    block = key.split(".", 1)[0]
    if block.startswith("down_tr"):
        return "encoder." + key
    if block.startswith("up_tr"):
        return "decoder." + key
    if key.startswith("out_tr.final_conv."):
        return "segmentation_head." + key.removeprefix("out_tr.final_conv.")
    return None


def _flatten(tensor: torch.Tensor, target_key: str) -> torch.Tensor:
    if tensor.ndim != 5:
        return tensor
    if ".up_conv." in target_key:  # ConvTranspose3d (in, out, x, y, z)
        return tensor.mean(dim=-1)
    return tensor.sum(dim=-1)  # Conv3d (out, in, x, y, z)


def flatten_genesis_3d(state: dict, model: nn.Module) -> dict:
    """Load a Models Genesis UNet3D state dict into a :class:`GenesisUnet`; returns the report
    ``{"consumed": [...], "skipped": {key: reason}, "missing": [...]}``."""
    if not is_genesis_state(state):
        raise ConfigError("not a Models Genesis UNet3D checkpoint (no down_tr64 block)")
    own = model.state_dict()
    new, consumed, skipped = {}, [], {}
    for key, tensor in state.items():
        target = _target_key(key)
        leaf = key.rsplit(".", 1)[-1]
        if target is None:
            skipped[key] = "not part of the UNet3D blocks"
        elif leaf in NORM_BUFFERS:
            skipped[key] = "batch-norm running statistic: the released model uses batch statistics"
        elif target not in own:
            skipped[key] = f"no {target} in the 2D network"
        else:
            flat = _flatten(tensor, target)
            if tuple(flat.shape) != tuple(own[target].shape):
                skipped[key] = (f"shape {tuple(tensor.shape)} flattens to {tuple(flat.shape)}, "
                                f"the 2D layer has {tuple(own[target].shape)}")
            else:
                new[target] = flat.to(own[target].dtype)
                consumed.append(key)
    learnable = [k for k in own if k.rsplit(".", 1)[-1] not in NORM_BUFFERS]
    missing = sorted(k for k in learnable if k not in new)
    if not consumed:
        raise ConfigError("no tensor of the Models Genesis checkpoint fits the 2D network")
    own.update(new)
    model.load_state_dict(own)
    return {"consumed": consumed, "skipped": skipped, "missing": missing}
