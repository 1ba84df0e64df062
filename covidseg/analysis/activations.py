"""Activations of every block of a network on a fixed probe set, as (positions, channels).

Blocks: the encoder's resolution levels (the module returning each level's feature map), the decoder's blocks and the segmentation head — the same split
for every covidseg architecture.  Conv maps (N, C, H, W) become N·H·W data points of C neurons;
positions are sub-sampled with a seed that depends only on the layer and its shape, so two
networks of the same architecture are compared on exactly the same points.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
from torch import nn

from covidseg.models.surgery import encoder_levels


def blocks_of(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of the encoder stages, decoder blocks and head, in forward order."""
    blocks = [(f"encoder.level{lv['level']}", lv["output"][1]) for lv in encoder_levels(model)
              if lv["output"] is not None]
    decoder = model.decoder
    inner = getattr(decoder, "blocks", None)
    if isinstance(inner, nn.ModuleList):
        blocks += [(f"decoder.{i}", m) for i, m in enumerate(inner)]
    else:
        blocks += [(f"decoder.{name}", m) for name, m in decoder.named_children()
                   if any(True for _ in m.parameters())]
    blocks.append(("head", model.segmentation_head))
    return blocks


@torch.no_grad()
def collect_activations(model: nn.Module, probe: torch.Tensor, max_points: int = 4096,
                        seed: int = 0, batch_size: int = 8) -> dict[str, np.ndarray]:
    """{block name: (points, channels) float32} for the probe slices (N, 1, H, W)."""
    model = model.eval()
    names = blocks_of(model)
    store: dict[str, list[torch.Tensor]] = {n: [] for n, _ in names}
    hooks = []
    for name, module in names:
        def hook(_m, _inp, out, name=name):
            out = out[-1] if isinstance(out, (list, tuple)) else out
            store[name].append(out.detach().float().cpu())
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
