"""The views and perturbations the semi-supervised methods (:mod:`covidseg.semi.teacher`) teach
with: a weak view (light noise), a strong view (contrast, brightness, stronger noise, a cut-out
square), CutMix within the batch (targets mixed alike), dropout on the encoder's features, the
teacher's confident targets, and one forward pass for every student input of a size."""

from __future__ import annotations

import contextlib
import math

import torch


def weak_view(x: torch.Tensor, noise: float = 0.05) -> torch.Tensor:
    """Light noise on tissue (background 0 stays 0)."""
    return x + noise * torch.randn_like(x) * (x != 0)


def strong_view(x: torch.Tensor, contrast: float = 0.25, noise: float = 0.2,
                cutout: float = 0.25, with_kept: bool = False):
    """Random contrast and brightness, stronger noise (on tissue) and one zeroed square of side
    ``cutout`` × the image side per image; ``with_kept``: also the (n, 1, H, W) mask of the
    pixels outside the square (where a target still applies)."""
    n, _, H, W = x.shape
    tissue = (x != 0).to(x.dtype)
    scale = 1 + contrast * (2 * torch.rand((n, 1, 1, 1), device=x.device) - 1)
    shift = contrast * (2 * torch.rand((n, 1, 1, 1), device=x.device) - 1)
    y = (x * scale + shift + noise * torch.randn_like(x)) * tissue
    if cutout <= 0:
        return (y, torch.ones((n, 1, H, W), dtype=y.dtype, device=x.device)) if with_kept else y
    square = random_boxes(n, H, W, cutout * cutout, cutout * cutout, x.device, aspect=1.0)
    kept = (~square).to(y.dtype)
    y = y * kept
    return (y, kept) if with_kept else y


def random_boxes(n: int, H: int, W: int, low: float, high: float, device=None,
                 aspect: float = 0.3) -> torch.Tensor:
    """(n, 1, H, W) bool: one axis-aligned box per image, its area a uniform fraction in
    [``low``, ``high``] of the image and its aspect ratio in [``aspect``, 1/``aspect``]
    (CutMix's boxes; ``aspect`` 1: squares)."""
    area = low + (high - low) * torch.rand(n, device=device)
    ratio = torch.exp(math.log(aspect) * (2 * torch.rand(n, device=device) - 1))
    h = (torch.sqrt(area * ratio) * H).clamp(1, H).long()
    w = (torch.sqrt(area / ratio) * W).clamp(1, W).long()
    ys = (torch.rand(n, device=device) * (H - h + 1)).long()
    xs = (torch.rand(n, device=device) * (W - w + 1)).long()
    rows = torch.arange(H, device=device)[None, :, None]
    cols = torch.arange(W, device=device)[None, None, :]
    box = ((rows >= ys[:, None, None]) & (rows < (ys + h)[:, None, None])
           & (cols >= xs[:, None, None]) & (cols < (xs + w)[:, None, None]))
    return box[:, None]


def cutmix(images: torch.Tensor, *maps: torch.Tensor, low: float = 0.02, high: float = 0.4):
    """CutMix within the batch: image i gets a box of image i+1 (cyclically) pasted in, and each
    of ``maps`` (targets, confidence masks: same (n, ·, H, W) layout) gets the same box of the
    same partner, so a mixed image's target is exactly the mix of the two targets.  Returns the
    mixed images and maps (unchanged with fewer than two images)."""
    n, _, H, W = images.shape
    if n < 2:
        return (images, *maps)
    box = random_boxes(n, H, W, low, high, images.device)
    partner = torch.roll(torch.arange(n, device=images.device), -1)
    return tuple(torch.where(box, t[partner], t) for t in (images, *maps))


@contextlib.contextmanager
def feature_dropout(model: torch.nn.Module, rows: slice, p: float = 0.5):
    """While active, a forward pass of ``model`` drops whole channels (probability ``p``) of its
    encoder's features for the batch rows ``rows`` (UniMatch's feature perturbation); a network
    without an smp-style ``encoder`` (a list of features) is left as it is."""
    encoder = getattr(model, "encoder", None)

    def perturb(module, inputs, output):
        if not isinstance(output, (list, tuple)):
            return output
        out = [output[0]]
        for f in output[1:]:
            part = torch.nn.functional.dropout2d(f[rows], p=p, training=True)
            out.append(torch.cat([f[:rows.start], part, f[rows.stop:]]))
        return type(output)(out) if isinstance(output, tuple) else out

    handle = encoder.register_forward_hook(perturb) if encoder is not None else None
    try:
        yield handle is not None
    finally:
        if handle is not None:
            handle.remove()


def has_feature_encoder(model: torch.nn.Module) -> bool:
    """Whether :func:`feature_dropout` can perturb ``model``'s features."""
    return isinstance(getattr(model, "encoder", None), torch.nn.Module)


def forward_together(model, parts: list[torch.Tensor], perturb: int | None = None) -> list:
    """The outputs of ``model`` for each of ``parts``, computed in one forward pass per input size
    (every part of one size concatenated: batch-norm sees them as one batch); an empty part gives
    None.  ``perturb``: the index of a part whose encoder features are dropped
    (:func:`feature_dropout`) in that pass."""
    outs: list = [None] * len(parts)
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(parts):
        if len(t):
            groups.setdefault(tuple(t.shape[1:]), []).append(i)
    for idx in groups.values():
        sizes = [len(parts[i]) for i in idx]
        rows = None
        if perturb in idx:
            start = sum(sizes[:idx.index(perturb)])
            rows = slice(start, start + len(parts[perturb]))
        with (feature_dropout(model, rows) if rows is not None else contextlib.nullcontext()):
            y = model(torch.cat([parts[i] for i in idx]))
        for i, chunk in zip(idx, y.split(sizes)):
            outs[i] = chunk
    return outs


def confident_targets(prob: torch.Tensor, confidence: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(hard target p ≥ 0.5, confidence mask) of a probability map: a pixel counts when the
    teacher is sure of lesion (p ≥ ``confidence``) or of background (p ≤ 1 − ``confidence``)."""
    target = (prob >= 0.5).to(prob.dtype)
    confident = ((prob >= confidence) | (prob <= 1 - confidence)).to(prob.dtype)
    return target, confident
