"""Whole-volume inference: the slices of a volume go through a 2D network in batches.

Used by validation during training, by ``evaluate`` and by ``predict`` alike.  Slices are padded
once per volume to the network's stride (background 0, as preprocessing leaves it) and cropped
back; no per-slice Python loop of model calls on a GPU (on the CPU, where large batches spill
the caches, :func:`covidseg.base.device.inference_batch` caps a pass at ~64k pixels).  A 3D network
(the coarse U-Net) sees the whole volume at its coarse in-plane size and its output is
interpolated back.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from covidseg.base.device import autocast, inference_batch
from covidseg.models.network import traits_of


def stride_of(model: nn.Module) -> int:
    return traits_of(model).stride


def is_3d(model: nn.Module) -> bool:
    return traits_of(model).volumetric


def to_coarse(volume: torch.Tensor, size: int) -> torch.Tensor:
    """(z, y, x) → (1, 1, z, size, size), in-plane linear resampling."""
    return torch.nn.functional.interpolate(volume[None, None].float(),
                                           size=(volume.shape[0], size, size), mode="trilinear",
                                           align_corners=False)


def lesion_probabilities(logits: torch.Tensor, classes: bool = False) -> torch.Tensor:
    """(n, C, …) logits → the lesion probability (n, 1, …): sigmoid of one channel, or for a
    multi-class network (softmax over background + lesion classes) 1 − p(background), the
    probability of any lesion; with ``classes`` the softmax itself."""
    logits = logits.float()
    if logits.shape[1] == 1:
        return torch.sigmoid(logits)
    prob = torch.softmax(logits, dim=1)
    return prob if classes else 1.0 - prob[:, :1]


def output_classes(model: nn.Module) -> int:
    """Output channels of a covidseg network (1: binary lesion; 3: background + 2 classes)."""
    return traits_of(model).classes


# test-time mirroring: the slice flipped along y, x and both (dims of an (n, C, H, W) batch)
MIRRORS = ((3,), (2,), (2, 3))


@torch.no_grad()
def predict_volume(model: nn.Module, image: np.ndarray, device: torch.device,
                   batch_size: int = 16, classes: bool = False,
                   before_batch=None, tta: bool = False) -> np.ndarray:
    """Lesion probability (float32, same shape) of a (z, y, x) preprocessed volume; with
    ``classes`` (multi-class networks) the per-class probabilities, (C, z, y, x).
    ``before_batch``: called before each forward pass (``predict`` sets the CPU thread count
    there).  ``tta``: test-time mirroring — the mean of the probabilities of each slice and of its
    three in-plane mirror images (flipped back), 4 forward passes (nnU-Net's 2D mirroring)."""
    if is_3d(model):
        return _predict_volume_3d(model, image, device)
    was_training = model.training
    model.eval()
    nz, ny, nx = image.shape
    m = stride_of(model)
    H, W = -(-ny // m) * m, -(-nx // m) * m
    y0, x0 = (H - ny) // 2, (W - nx) // 2
    volume = torch.zeros((nz, 1, H, W), dtype=torch.float32)
    volume[:, 0, y0:y0 + ny, x0:x0 + nx] = torch.from_numpy(np.array(image, dtype=np.float32))
    if device.type == "cuda":
        volume = volume.pin_memory()
    channels = output_classes(model) if classes else 1
    out = torch.empty((nz, channels, ny, nx), dtype=torch.float32)
    batch_size = inference_batch(batch_size, device, H, W)
    for start in range(0, nz, batch_size):
        if before_batch is not None:
            before_batch()
        batch = volume[start:start + batch_size].to(device, non_blocking=True)
        with autocast(device):
            prob = lesion_probabilities(model(batch), classes)
            if tta:
                for dims in MIRRORS:
                    prob += lesion_probabilities(model(batch.flip(dims)), classes).flip(dims)
                prob /= 1 + len(MIRRORS)
        prob = prob[:, :, y0:y0 + ny, x0:x0 + nx]
        out[start:start + batch_size] = prob.cpu()
    model.train(was_training)
    out = out.numpy()
    return out.transpose(1, 0, 2, 3) if classes else out[:, 0]


@torch.no_grad()
def _predict_volume_3d(model: nn.Module, image: np.ndarray, device: torch.device) -> np.ndarray:
    was_training = model.training
    model.eval()
    x = to_coarse(torch.from_numpy(np.array(image, dtype=np.float32)),
                  traits_of(model).coarse_size)
    with autocast(device):
        logits = model(x.to(device))
    prob = torch.nn.functional.interpolate(torch.sigmoid(logits.float()), size=image.shape,
                                           mode="trilinear", align_corners=False)
    model.train(was_training)
    return prob[0, 0].cpu().numpy()
