"""Reading a mask aligned with its image: same grid (size, spacing, origin, orientation, within
tolerances), canonical orientation, and values that mean what the mask says (binary, or a
ground-glass/consolidation label map with ``labels=multiclass``).  Each disagreement is a one-line
:class:`~covidseg.base.errors.CaseError` naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from covidseg.base.errors import GeometryMismatch, NaNValues, NonBinaryMask, ShapeMismatch
from covidseg.data.readers import is_slice_image, read_image, to_canonical


def _mm(values) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ") mm"


def check_geometry(mask_img: sitk.Image, ref: sitk.Image, path, ref_path) -> None:
    """Raise when ``mask_img`` is not on the grid of ``ref`` (both canonical)."""
    if mask_img.GetSize() != ref.GetSize():
        raise ShapeMismatch(path, f"mask size {mask_img.GetSize()} differs from image size "
                                  f"{ref.GetSize()} ({Path(ref_path).name})")
    sp_m, sp_i = np.array(mask_img.GetSpacing()), np.array(ref.GetSpacing())
    if not np.allclose(sp_m, sp_i, rtol=1e-3, atol=1e-4):
        raise GeometryMismatch(path, f"mask spacing {_mm(sp_m)} differs from the image's "
                                     f"{_mm(sp_i)} ({Path(ref_path).name})")
    tol = 0.5 * float(sp_i.min())
    if not np.allclose(mask_img.GetOrigin(), ref.GetOrigin(), atol=tol):
        raise GeometryMismatch(path, f"mask origin {_mm(mask_img.GetOrigin())} differs from the "
                                     f"image's {_mm(ref.GetOrigin())} ({Path(ref_path).name})")
    if not np.allclose(mask_img.GetDirection(), ref.GetDirection(), atol=1e-3):
        raise GeometryMismatch(path, "mask orientation differs from the image's "
                                     f"({Path(ref_path).name})")


def select_labels(arr: np.ndarray, values: tuple[int, ...], kind: str) -> np.ndarray:
    """The part of a shared label map (one file marking lesions and lungs, as nnU-Net's) that
    ``kind`` reads: for the infection, its ``values`` renumbered 1, 2, … in order (so a
    ground-glass/consolidation pair reads as covidseg's multiclass map); for the lungs, any of
    ``values`` (which include the lesion labels: lesions lie in the lungs)."""
    if kind != "infection":
        return np.isin(arr, values).astype(np.uint8)
    out = np.zeros(arr.shape, np.uint8)
    for i, v in enumerate(values, 1):
        out[arr == v] = i
    return out


def read_mask(path, ref_image: sitk.Image, ref_path, kind: str,
              labels: str = "binary", values: tuple[int, ...] | None = None) -> np.ndarray:
    """A (z, y, x) mask aligned with the canonical image: binary (lung label maps and 0/255
    masks become binary), or with ``labels=multiclass`` an infection label map
    (0 background, 1 ground-glass, 2 consolidation) as uint8.  ``values``: the file is a shared
    label map and these of its values are the ``kind`` (:func:`select_labels`)."""
    m = read_image(path)
    if is_slice_image(Path(path)):
        m.CopyInformation(ref_image) if m.GetSize() == ref_image.GetSize() else None
    m = to_canonical(m)
    check_geometry(m, ref_image, path, ref_path)
    arr = sitk.GetArrayFromImage(m)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise NaNValues(path, "mask has NaN or infinite values")
        if not np.all(arr == np.round(arr)):
            raise NonBinaryMask(path, "mask has fractional values; expected 0/1 labels")
    if values is not None:
        arr = select_labels(arr, values, kind)
    values = np.unique(arr)
    if kind == "infection":
        shown = ", ".join(str(v) for v in values[:6]) + (" …" if len(values) > 6 else "")
        if labels == "multiclass":
            if set(values.tolist()) - {0, 1, 2}:
                raise NonBinaryMask(path, "labels=multiclass expects 0 background, 1 "
                                          f"ground-glass, 2 consolidation (values {shown})")
            return arr.astype(np.uint8)
        if set(values.tolist()) - {0, 1} and set(values.tolist()) - {0, 255}:
            hint = " (labels=multiclass reads 0/1/2 as ground-glass/consolidation)" \
                if set(values.tolist()) <= {0, 1, 2} else ""
            raise NonBinaryMask(path, f"infection mask is not binary (values {shown}){hint}")
    elif values.min() < 0:
        raise NonBinaryMask(path, "lung mask has negative labels")
    return arr > 0
