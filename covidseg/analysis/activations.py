"""Activations of every block of a network on a fixed probe set, as (positions, channels).

Blocks: the encoder's resolution levels (the module returning each level's feature map), the
decoder's blocks and the segmentation head — the same split for every covidseg architecture.
Conv maps (N, C, H, W) become N·H·W data points of C neurons; positions are sub-sampled with a
seed that depends only on the layer and its shape, so two networks of the same architecture are
compared on exactly the same points.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
from torch import nn

ENCODER = "encoder"  # stands for encoder.level1 … encoder.levelL: the feature maps it returns


def blocks_of(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of the encoder, the decoder blocks and the head, in forward order; the
    encoder expands to one block per resolution level (the feature maps it returns)."""
    blocks = [(ENCODER, model.encoder)]
    decoder = model.decoder
    inner = getattr(decoder, "blocks", None)
    if isinstance(inner, nn.ModuleList):
        blocks += [(f"decoder.{i}", m) for i, m in enumerate(inner)]
    else:  # a ModuleList's own hook never fires: its elements are the blocks
        for name, m in decoder.named_children():
            items = m.named_children() if isinstance(m, (nn.ModuleList, nn.ModuleDict)) \
                else [("", m)]
            blocks += [(f"decoder.{name}.{k}".rstrip("."), mm) for k, mm in items
                       if any(True for _ in mm.parameters())]
    blocks.append(("head", model.segmentation_head))
    return blocks


def _cpu_copy(t: torch.Tensor) -> torch.Tensor:
    # a copy now: the network may later change the tensor in place (an in-place activation)
    return t.detach().to("cpu", torch.float32, copy=True)


@torch.no_grad()
def collect_activations(model: nn.Module, probe: torch.Tensor, max_points: int = 4096,
                        seed: int = 0, batch_size: int = 8) -> dict[str, np.ndarray]:
    """{block name: (points, channels) float32} for the probe slices (N, 1, H, W)."""
    model = model.eval()
    store: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for name, module in blocks_of(model):
        def hook(_m, inp, out, name=name):
            if name == ENCODER:  # one block per returned feature map (not the input, not empty)
                maps = [o for o in out if o is not inp[0] and o.shape[1] > 0]
                for k, o in enumerate(maps):
                    store.setdefault(f"encoder.level{k + 1}", []).append(_cpu_copy(o))
                return
            out = out[-1] if isinstance(out, (list, tuple)) else out
            store.setdefault(name, []).append(_cpu_copy(out))
        hooks.append(module.register_forward_hook(hook))
    try:
        for start in range(0, len(probe), batch_size):
            model(probe[start:start + batch_size])
    finally:
        for h in hooks:
            h.remove()
    out = {}
    for name, chunks in store.items():
        maps = torch.cat(chunks)                               # (N, C, H, W)
        flat = maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1]).numpy()
        if len(flat) > max_points:
            key = zlib.crc32(f"{name}{tuple(maps.shape)}".encode()) ^ seed
            idx = np.sort(np.random.default_rng(key).choice(len(flat), max_points, replace=False))
            flat = flat[idx]
        out[name] = flat
    return out
