"""Feature vectors of patches: the fine-tuned network's encoder + global average pooling."""

from __future__ import annotations

import numpy as np
import torch

from covidseg.device import autocast, place_model


@torch.no_grad()
def encode_patches(model: torch.nn.Module, patches: np.ndarray, device: torch.device,
                   batch_size: int = 64) -> torch.Tensor:
    """(n, C) float32 features (on the CPU) of (n, P, P) patches: deepest encoder map, averaged."""
    model = place_model(model, device).eval()
    feats = []
    x = torch.from_numpy(np.ascontiguousarray(patches, dtype=np.float32))[:, None]
    for start in range(0, len(x), batch_size):
        with autocast(device):
            maps = model.encoder(x[start:start + batch_size].to(device, non_blocking=True))
        deepest = maps[-1] if isinstance(maps, (list, tuple)) else maps
        feats.append(deepest.float().mean(dim=tuple(range(2, deepest.ndim))).cpu())
    return torch.cat(feats) if feats else torch.zeros((0, 0))
