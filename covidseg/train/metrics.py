"""Segmentation metrics in millimetres, per 3D volume or per 2D slice (the level is in the name).

All functions take binary numpy masks and the voxel spacing in the array's axis order
(``(z, y, x)`` for volumes, ``(y, x)`` for slices).

Empty-case policy (documented in README, used everywhere):

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


def surface_metrics(pred: np.ndarray, ref: np.ndarray, spacing,
                    tolerance_mm: float = NSD_TOLERANCE_MM) -> dict:
    pred, ref = pred.astype(bool), ref.astype(bool)
    if not pred.any() and not ref.any():
        return {"hd95": 0.0, "nsd": 1.0}
    if not pred.any() or not ref.any():
        return {"hd95": float("nan"), "nsd": 0.0}
    sp, sr = _surface(pred), _surface(ref)
    d_pr = _directed_distances(sp, sr, spacing)
    d_rp = _directed_distances(sr, sp, spacing)
    hd95 = max(float(np.percentile(d_pr, 95)), float(np.percentile(d_rp, 95)))
    nsd = float(((d_pr <= tolerance_mm).sum() + (d_rp <= tolerance_mm).sum()) / (d_pr.size + d_rp.size))
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
