"""Segmentation metrics in millimetres, per 3D volume or per 2D slice (the level is in the name).

All functions take binary numpy masks and the voxel spacing in the array's axis order
(``(z, y, x)`` for volumes, ``(y, x)`` for slices).

Empty-case policy (documented in docs/explanation.md, used everywhere):

* reference and prediction both empty → Dice 1, IoU 1, HD95 0, NSD 1, sensitivity 1, precision 1
  (the model correctly found nothing);
* exactly one empty → Dice 0, IoU 0, NSD 0; HD95 is undefined and reported as NaN (means are
  taken over the defined values and the number of undefined cases is reported); sensitivity is
  NaN when the reference is empty, precision NaN when the prediction is empty.

Surface distances use the voxel faces of each mask (voxels with a background 6-neighbour); NSD
counts surface voxels within the tolerance (default 3 mm for lesions, as the COVID-19-CT-Seg
benchmark).  HD95 is the larger of the two directed 95th percentiles.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage as ndi

NSD_TOLERANCE_MM = 3.0


def _surface(mask: np.ndarray) -> np.ndarray:
    if not mask.any():
        return mask
    eroded = ndi.binary_erosion(mask, structure=ndi.generate_binary_structure(mask.ndim, 1),
                                border_value=0)
    return mask & ~eroded


def _directed_distances(a_surface: np.ndarray, b_surface: np.ndarray, spacing) -> np.ndarray:
    """Distance (mm) from every surface voxel of a to the nearest surface voxel of b."""
    dt = ndi.distance_transform_edt(~b_surface, sampling=spacing)
    return dt[a_surface]


def overlap_metrics(pred: np.ndarray, ref: np.ndarray) -> dict:
    pred, ref = pred.astype(bool), ref.astype(bool)
    tp = int((pred & ref).sum())
    npred, nref = int(pred.sum()), int(ref.sum())
    if npred == 0 and nref == 0:
        return {"dice": 1.0, "iou": 1.0, "sensitivity": 1.0, "precision": 1.0}
    return {
        "dice": 2.0 * tp / (npred + nref),
        "iou": tp / (npred + nref - tp),
        "sensitivity": tp / nref if nref else float("nan"),
        "precision": tp / npred if npred else float("nan"),
    }


def _union_crop(pred: np.ndarray, ref: np.ndarray, margin: int = 2) -> tuple[slice, ...]:
    """Bounding box of ``pred | ref`` enlarged by ``margin`` voxels and clipped to the array.

    Both masks must not be empty together.  Surfaces and surface distances are unchanged by the
    crop: every mask voxel stays at least ``margin`` voxels from a crop face that is not an array
    face, so erosion (border value 0) finds the same surface voxels (a margin of 0 would too: a
    voxel on a face of the union box always has a background neighbour outside it), and Euclidean
    distances between surface voxels do not depend on the extent of the grid.
    """
    union = pred | ref
    box = []
    for axis in range(union.ndim):
        other = tuple(a for a in range(union.ndim) if a != axis)
        idx = np.flatnonzero(union.any(axis=other))
        box.append(slice(max(int(idx[0]) - margin, 0),
                         min(int(idx[-1]) + margin + 1, union.shape[axis])))
    return tuple(box)


def surface_metrics(pred: np.ndarray, ref: np.ndarray, spacing,
                    tolerance_mm: float = NSD_TOLERANCE_MM) -> dict:
    pred, ref = pred.astype(bool), ref.astype(bool)
    if not pred.any() and not ref.any():
        return {"hd95": 0.0, "nsd": 1.0}
    if not pred.any() or not ref.any():
        return {"hd95": float("nan"), "nsd": 0.0}
    box = _union_crop(pred, ref)  # same results, far faster for small lesions in large volumes
    pred, ref = pred[box], ref[box]
    sp, sr = _surface(pred), _surface(ref)
    d_pr = _directed_distances(sp, sr, spacing)
    d_rp = _directed_distances(sr, sp, spacing)
    hd95 = max(float(np.percentile(d_pr, 95)), float(np.percentile(d_rp, 95)))
    within = (d_pr <= tolerance_mm).sum() + (d_rp <= tolerance_mm).sum()
    nsd = float(within / (d_pr.size + d_rp.size))
    return {"hd95": hd95, "nsd": nsd}


def volume_metrics(pred: np.ndarray, ref: np.ndarray, spacing_zyx,
                   tolerance_mm: float = NSD_TOLERANCE_MM) -> dict:
    """Dice, IoU, HD95 (mm), NSD, sensitivity, precision of one 3D volume."""
    return {**overlap_metrics(pred, ref), **surface_metrics(pred, ref, spacing_zyx, tolerance_mm)}


def slice_metrics(pred: np.ndarray, ref: np.ndarray, spacing_yx,
                  tolerance_mm: float = NSD_TOLERANCE_MM) -> list[dict]:
    """The same metrics for every axial slice of a (z, y, x) pair."""
    return [volume_metrics(p, r, spacing_yx, tolerance_mm) for p, r in zip(pred, ref)]


def summarise(rows: list[dict], keys=("dice", "iou", "hd95", "nsd", "sensitivity", "precision"),
              prefix: str = "") -> dict:
    """Mean over cases of each metric (NaN excluded), plus how many were undefined."""
    out = {}
    for k in keys:
        v = np.array([r[k] for r in rows if k in r], dtype=float)
        defined = v[np.isfinite(v)]
        out[f"{prefix}{k}"] = float(defined.mean()) if defined.size else float("nan")
        if defined.size < v.size:
            out[f"{prefix}{k}_undefined"] = float(v.size - defined.size)
    return out


# --------------------------------------------------------------------------------------------
# Published conventions, for comparison with the literature
# --------------------------------------------------------------------------------------------

def surface_dice_area(pred: np.ndarray, ref: np.ndarray, spacing,
                      tolerance_mm: float = NSD_TOLERANCE_MM) -> float:
    """Surface-area normalised surface Dice (NSD) of the COVID-19-CT-Seg benchmark.

    This is the surface Dice of Nikolov et al. (DeepMind ``surface-distance``): the surface of each
    mask is a mesh of surface elements, one per 2×2(×2) neighbourhood of voxels (a marching-cubes
    like mesh through the voxel centres), each weighted by its area (3D, mm²) or length (2D, mm)
    for the given spacing; NSD is the area of both surfaces lying within ``tolerance_mm`` of the
    other surface divided by their total area.  It is computed by MONAI's
    ``compute_surface_dice(use_subvoxels=True)``, which follows that implementation.  Unlike
    :func:`surface_metrics` (which counts voxel faces, every surface voxel weighing the same),
    surface elements are weighted by their area.

    ``pred`` and ``ref`` are binary 2D ``(y, x)`` or 3D ``(z, y, x)`` arrays, ``spacing`` the
    pixel/voxel size in mm in the same axis order.  Empty policy of this module: both empty → 1.0,
    exactly one empty → 0.0 (MONAI's NaN for both-empty is not used).  Both masks are cropped to
    the bounding box of ``pred | ref`` plus a 2-voxel margin before calling MONAI, which gives the
    same value (MONAI crops to the union box plus 1 voxel itself, zero-padding at the array
    border) without copying the full volume.
    """
    import torch
    from monai.metrics import compute_surface_dice

    pred, ref = np.asarray(pred).astype(bool), np.asarray(ref).astype(bool)
    if pred.shape != ref.shape:
        raise ValueError(f"pred and ref shapes differ: {pred.shape} vs {ref.shape}")
    if pred.ndim not in (2, 3):
        raise ValueError(f"expected a 2D (y, x) or 3D (z, y, x) mask, got {pred.ndim} dimensions")
    spacing = np.broadcast_to(np.asarray(spacing, dtype=float), (pred.ndim,))
    spacing = tuple(float(s) for s in spacing)
    has_pred, has_ref = bool(pred.any()), bool(ref.any())
    if not has_pred and not has_ref:
        return 1.0
    if not has_pred or not has_ref:
        return 0.0
    box = _union_crop(pred, ref, margin=2)
    p = torch.from_numpy(np.ascontiguousarray(pred[box]))[None, None]
    r = torch.from_numpy(np.ascontiguousarray(ref[box]))[None, None]
    with warnings.catch_warnings():  # MONAI 1.5+ warns about an argument it passes itself
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*",
                                category=FutureWarning)
        nsd = compute_surface_dice(p, r, class_thresholds=[float(tolerance_mm)],
                                   include_background=True, spacing=spacing, use_subvoxels=True)
    return float(nsd[0, 0])


def _infnet_thresholds(n: int = 256) -> np.ndarray:
    """MATLAB ``1:-1/(n-1):0``: ``n`` thresholds from 1 down to 0, as rounded (n-1-k)/(n-1)."""
    if n < 2:
        raise ValueError("n must be at least 2")
    return np.arange(n - 1, -1, -1, dtype=float) / (n - 1)


def _minmax_normalise(prob: np.ndarray) -> np.ndarray:
    """``mapminmax(x, 0, 1)`` of the whole map; a constant map becomes all zeros."""
    x = np.asarray(prob, dtype=float).ravel()
    if x.size == 0:
        raise ValueError("empty probability map")
    if not np.isfinite(x).all():
        raise ValueError("the probability map has non-finite values")
    lo, hi = x.min(), x.max()
    rng = hi - lo
    return (x - lo) / (rng if rng != 0 else 1.0)


def threshold_dice_curve(prob: np.ndarray, ref: np.ndarray, n: int = 256) -> np.ndarray:
    """Dice of one image at each of ``n`` thresholds, Inf-Net EvaluationTool convention.

    Convention of the Inf-Net evaluation tool (Fan et al., "Inf-Net: Automatic COVID-19 Lung
    Infection Segmentation from CT Images", IEEE TMI 2020; MATLAB ``EvaluationTool``,
    ``main.m`` + ``Fmeasure_calu.m`` in github.com/DengPingFan/Inf-Net): the probability map is
    min-max normalised to [0, 1] over the image (``mapminmax``); it is binarised at the thresholds
    ``1:-1/255:0`` (256 values, from 1 down to 0) as ``map >= t``; at each threshold
    Dice = 2·TP / (|G| + |P|), except that it is 0 whenever TP = 0 — so an image without any true
    positive scores 0, even when reference and prediction are both empty (this differs from this
    module's empty policy, on purpose: it is the published convention).  At threshold 0 every pixel
    is predicted, so an image with a non-empty reference always has a true positive there.  The
    per-threshold Dice is averaged over the images, giving a curve of 256 values; the reported
    "Dice" is the mean of that curve (threshold-averaged, ``meanDic``) and its maximum
    (``maxDic``).

    Details: a constant map (max = min) is normalised to all zeros, as the original ``mapminmax``
    (``rangex(rangex==0) = 1``), so it is predicted positive only at threshold 0; newer MATLAB
    releases (R2012b+) instead leave a constant map unchanged — both agree on the usual blank
    (all-zero) map.  The tool reads 8-bit PNG maps (values k/255) and resizes them to the ground
    truth; here the map is taken at full floating-point precision and must have the reference's
    shape.  ``n`` other than 256 gives the thresholds ``1:-1/(n-1):0``.

    Returns an array of ``n`` Dice values, threshold 1 first.
    """
    m = _minmax_normalise(prob)
    g = np.asarray(ref).astype(bool).ravel()
    if g.size != m.size or np.shape(prob) != np.shape(ref):
        raise ValueError(f"prob and ref shapes differ: {np.shape(prob)} vs {np.shape(ref)}")
    t = _infnet_thresholds(n)
    all_sorted = np.sort(m)
    pos_sorted = np.sort(m[g])
    n_pred = m.size - np.searchsorted(all_sorted, t, side="left")  # #(m >= t)
    tp = pos_sorted.size - np.searchsorted(pos_sorted, t, side="left")  # #(m >= t & g)
    denom = pos_sorted.size + n_pred
    dice = np.zeros(n, dtype=float)
    ok = tp > 0
    dice[ok] = 2.0 * tp[ok] / denom[ok]
    return dice


def threshold_free_dice(probs, refs, n: int = 256) -> dict:
    """Threshold-averaged and maximum Dice over a set of 2D images (Inf-Net convention).

    ``probs`` and ``refs`` are sequences of 2D probability maps and binary references (images may
    differ in size).  See :func:`threshold_dice_curve` for the convention (Fan et al., Inf-Net,
    IEEE TMI 2020, MATLAB EvaluationTool): per-image Dice at 256 thresholds of the min-max
    normalised map, 0 where there is no true positive, averaged over images per threshold; the
    result is the mean of that curve (``dice_thravg``, the tool's ``meanDic``) and its maximum
    (``dice_max``, the tool's ``maxDic``), with the curve itself (threshold 1 first).
    """
    probs, refs = list(probs), list(refs)
    if len(probs) != len(refs):
        raise ValueError(f"{len(probs)} probability maps but {len(refs)} references")
    if not probs:
        raise ValueError("no images")
    curve = np.mean([threshold_dice_curve(p, r, n) for p, r in zip(probs, refs)], axis=0)
    return {"dice_thravg": float(curve.mean()), "dice_max": float(curve.max()), "curve": curve}


def sensitivity_specificity(pred: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """Sensitivity TP/(TP+FN) and specificity TN/(TN+FP) of a binary prediction.

    Undefined cases follow this module's empty policy: when the reference has no positive voxel,
    sensitivity is 1.0 if the prediction has none either and NaN otherwise; likewise, when the
    reference has no negative voxel, specificity is 1.0 if the prediction has none either and NaN
    otherwise.  (The Inf-Net tool instead reports sensitivity and specificity 0 whenever TP = 0.)
    """
    pred, ref = np.asarray(pred).astype(bool), np.asarray(ref).astype(bool)
    if pred.shape != ref.shape:
        raise ValueError(f"pred and ref shapes differ: {pred.shape} vs {ref.shape}")
    tp = int((pred & ref).sum())
    fn = int((~pred & ref).sum())
    tn = int((~pred & ~ref).sum())
    fp = int((pred & ~ref).sum())
    if tp + fn:
        sens = tp / (tp + fn)
    else:
        sens = 1.0 if not pred.any() else float("nan")
    if tn + fp:
        spec = tn / (tn + fp)
    else:
        spec = 1.0 if pred.all() else float("nan")
    return sens, spec
