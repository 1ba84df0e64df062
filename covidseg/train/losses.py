"""Losses for binary segmentation from one logit channel; targets may be soft (mixup,
pseudo-labels).

* ``ce`` — binary cross-entropy on logits, optionally class-weighted (``pos_weight``);
* ``dice`` — soft Dice, summed over the whole batch by default (``dice="batch"``, nnU-Net's
  ``batch_dice``): 1 − (2Σpg + ε) / (Σp + Σg + ε), the sums over every pixel of every image,
  ε = 1e-5 (under torchrun the sums are the global batch's).  A lesion-free slice then costs
  only what its false positives add to the batch's denominator.  ``dice="sample"`` (the
  thesis) takes the Dice of each image with smoothing 1 and
  averages: 1 − (2Σpg + 1) / (Σp + Σg + 1); there a lesion-free slice's Dice is 1/(Σp + 1), so
  any probability mass on it costs up to a whole sample's loss.  The denominator is Σp + Σg —
  the soft form of 2TP / (2TP + FP + FN), the Dice the runs report (nnU-Net's and MONAI's
  default) — not the thesis's Σp² + Σg² (V-Net): the two agree on hard predictions, but the
  squared one counts a hedged p = 0.5 as 0.25 false positive, so it penalises uncertain lesion
  borders less than the metric does;
* ``ce+dice`` — their sum (default);
* ``hausdorff`` — the distance-transform Hausdorff loss (Karimi & Salcudean 2019):
  mean((p - g)² · (d_g^α + d_p^α)), distances of the thresholded masks computed on the CPU,
  added to BCE so that training starts from a useful gradient.

Each loss takes an optional ``weight``: one per sample (shape (n,)), or one per pixel (the shape of
the target: self-training's confidence masks, 0 = ignored).  Per-pixel weights average the
per-pixel loss over the weighted pixels (Σ w·ℓ / Σ w); the Dice term weights each pixel's
contribution to the overlap and the sums, and each sample by its mean weight (``sample``) or its
pixels by the sample's weight (``batch``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from covidseg.base.errors import ConfigError
from covidseg.train.distributed import global_sum
from covidseg.train.vocabulary import DiceMode, Loss

DICE_MODES = DiceMode.values()
BATCH_DICE_SMOOTH = 1e-5


def _per_sample(x: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return x.mean()
    w = weight.to(x.dtype).reshape(-1)
    return (x * w).sum() / w.sum().clamp_min(1e-8)


def _is_pixelwise(weight) -> bool:
    return weight is not None and weight.dim() > 1


def _reduce_pixels(per_pixel: torch.Tensor, weight) -> torch.Tensor:
    if _is_pixelwise(weight):
        w = weight.to(per_pixel.dtype).expand_as(per_pixel)
        return (per_pixel * w).sum() / w.sum().clamp_min(1e-8)
    return _per_sample(per_pixel.flatten(1).mean(1), weight)


def bce_loss(logits, target, weight=None, pos_weight: float | None = None):
    pw = None if pos_weight is None else torch.tensor(pos_weight, device=logits.device,
                                                      dtype=logits.dtype)
    per_pixel = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pw, reduction="none")
    return _reduce_pixels(per_pixel, weight)


def batch_dice_loss_prob(p, target, weight=None, smooth: float = BATCH_DICE_SMOOTH):
    """1 − (2Σwpg + ε) / (Σwp + Σwg + ε) over every pixel of the batch; ``weight`` per sample
    (n,) or per pixel (the target's shape), 1 when None."""
    if weight is None:
        w = torch.ones_like(p)
    elif _is_pixelwise(weight):
        w = weight.to(p.dtype).expand_as(target)
    else:
        w = weight.to(p.dtype).reshape(-1, *([1] * (p.dim() - 1))).expand_as(p)
    sums = global_sum(torch.stack([(w * p * target).sum(), (w * p).sum(), (w * target).sum()]))
    return 1 - (2 * sums[0] + smooth) / (sums[1] + sums[2] + smooth).clamp_min(1e-8)


def dice_term(p, target, weight=None, mode: str = "batch"):
    """The Dice loss of probabilities ``p``, summed as ``mode`` says (:data:`DICE_MODES`)."""
    if mode == "batch":
        return batch_dice_loss_prob(p, target, weight)
    return soft_dice_loss_prob(p, target, weight)


def _distance_maps(masks: np.ndarray) -> np.ndarray:
    """Distance of every pixel to the mask boundary (0 for an empty or full mask)."""
    out = np.zeros(masks.shape, dtype=np.float32)
    for i, m in enumerate(masks):
        if m.any() and not m.all():
            out[i] = ndi.distance_transform_edt(m) + ndi.distance_transform_edt(~m)
    return out


def hausdorff_dt_loss(logits, target, weight=None, alpha: float = 2.0):
    p = torch.sigmoid(logits)
    with torch.no_grad():
        dp = _distance_maps(p.detach().float().cpu().numpy()[:, 0] > 0.5)
        dg = _distance_maps(target.detach().float().cpu().numpy()[:, 0] > 0.5)
        dist = torch.from_numpy(dp ** alpha + dg ** alpha).to(p.device, p.dtype)[:, None]
    per_pixel = (p - target) ** 2 * dist
    return _reduce_pixels(per_pixel, weight)


def multiclass_loss(logits, target, name: str = "ce+dice", weight=None, dice: str = "batch"):
    """Multi-class lesions (background + C-1 lesion classes, softmax): cross-entropy over the
    classes and/or the soft Dice of each lesion class (background left out), averaged; ``target``
    holds class indices (n, 1, H, W)."""
    labels = target[:, 0].round().long()
    total = logits.new_zeros(())
    if name in ("ce", "ce+dice"):
        total = total + _reduce_pixels(F.cross_entropy(logits, labels, reduction="none")[:, None],
                                       weight)
    if name in ("dice", "ce+dice"):
        prob = torch.softmax(logits, dim=1)
        onehot = F.one_hot(labels, logits.shape[1]).permute(0, 3, 1, 2).to(prob.dtype)
        dices = [dice_term(prob[:, k:k + 1], onehot[:, k:k + 1], weight, dice)
                 for k in range(1, logits.shape[1])]
        total = total + torch.stack(dices).mean()
    return total


def soft_dice_loss_prob(p, target, weight=None, smooth: float = 1.0):
    """Per-sample soft Dice loss (``dice="sample"``): 1 − (2Σwpg + 1) / (Σwp + Σwg + 1) of each
    image, averaged (``weight`` as in :func:`batch_dice_loss_prob`)."""
    p, t = p.flatten(1), target.flatten(1)
    w = torch.ones_like(p)
    if _is_pixelwise(weight):
        w = weight.to(p.dtype).expand_as(target).flatten(1)
        weight = w.mean(1)
    inter = (w * p * t).sum(1)
    dice = (2 * inter + smooth) / ((w * p).sum(1) + (w * t).sum(1) + smooth)
    return _per_sample(1 - dice, weight)


def _ce(logits, target, weight, pos_weight, dice):
    return bce_loss(logits, target, weight, pos_weight)


def _dice(logits, target, weight, pos_weight, dice):
    return dice_term(torch.sigmoid(logits), target, weight, dice)


def _ce_dice(logits, target, weight, pos_weight, dice):
    return (bce_loss(logits, target, weight, pos_weight)
            + dice_term(torch.sigmoid(logits), target, weight, dice))


def _hausdorff(logits, target, weight, pos_weight, dice):
    return bce_loss(logits, target, weight, pos_weight) + hausdorff_dt_loss(logits, target, weight)


# the binary losses by name: ``(logits, target, weight, pos_weight, dice) -> loss``
LOSSES = {Loss.CE: _ce, Loss.DICE: _dice, Loss.CE_DICE: _ce_dice, Loss.HAUSDORFF: _hausdorff}


class SegmentationLoss:
    """The configured loss: ``loss(logits, target, weight=None)``; with ``classes`` > 1 the
    multi-class form (:func:`multiclass_loss`: ``ce``, ``dice`` or ``ce+dice``); ``dice``: how the
    Dice term sums (:data:`DICE_MODES`); the binary losses come from :data:`LOSSES`."""

    def __init__(self, name: str = "ce+dice", pos_weight: float | None = None, classes: int = 1,
                 dice: str = "batch"):
        if name not in LOSSES:
            raise ConfigError(f"loss={name!r} is not one of {', '.join(LOSSES)}")
        if dice not in DICE_MODES:
            raise ConfigError(f"dice={dice!r} is not one of {', '.join(DICE_MODES)}")
        self.dice = dice
        if classes > 1 and (name == "hausdorff" or pos_weight):
            raise ConfigError("labels=multiclass trains with loss=ce, dice or ce+dice "
                              "(no hausdorff, no pos_weight)")
        self.name, self.pos_weight, self.classes = name, pos_weight, classes

    def __call__(self, logits, target, weight=None):
        logits, target = logits.float(), target.float()
        if self.classes > 1:
            return multiclass_loss(logits, target, self.name, weight, self.dice)
        return LOSSES[self.name](logits, target, weight, self.pos_weight, self.dice)
