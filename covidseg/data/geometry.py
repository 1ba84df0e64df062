"""Geometry: in-plane resampling to millimetres, in-plane crop/pad, 2D slice resizing."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def resample_in_plane(image: sitk.Image, spacing_mm: float = 1.0, label: bool = False,
                      fill: float = 0.0) -> sitk.Image:
    """Resample x and y to ``spacing_mm`` keeping the slice spacing (nearest neighbour for masks)."""
    old_spacing = image.GetSpacing()
    old_size = image.GetSize()
    new_spacing = (spacing_mm, spacing_mm, old_spacing[2])
    new_size = [max(1, int(round(old_size[i] * old_spacing[i] / new_spacing[i]))) for i in range(2)]
    new_size.append(old_size[2])
    # keep the physical extent centred: the first voxel centre moves by half the size change
    direction = np.array(image.GetDirection()).reshape(3, 3)
    shift = [(new_spacing[i] - old_spacing[i]) / 2.0 for i in range(2)] + [0.0]
    origin = np.array(image.GetOrigin()) + direction @ np.array(shift)
    return sitk.Resample(image, new_size, sitk.Transform(),
                         sitk.sitkNearestNeighbor if label else sitk.sitkLinear,
                         tuple(origin), new_spacing, image.GetDirection(), float(fill),
                         image.GetPixelID())


def crop_box_in_plane(shape_yx, size: int, centre_yx) -> tuple[int, int]:
    """Top-left corner (may be negative = padding) of a size × size window centred at centre_yx."""
    return (int(round(centre_yx[0] - size / 2)), int(round(centre_yx[1] - size / 2)))


def crop_or_pad_in_plane(array: np.ndarray, size: int, corner_yx, fill=0) -> np.ndarray:
    """Cut a size × size window at ``corner_yx`` from every slice; outside the image is ``fill``."""
    nz, ny, nx = array.shape
    out = np.full((nz, size, size), fill, dtype=array.dtype)
    y0, x0 = corner_yx
    sy0, sx0 = max(0, y0), max(0, x0)
    sy1, sx1 = min(ny, y0 + size), min(nx, x0 + size)
    if sy1 > sy0 and sx1 > sx0:
        out[:, sy0 - y0: sy1 - y0, sx0 - x0: sx1 - x0] = array[:, sy0:sy1, sx0:sx1]
    return out


def resize_slices(array: np.ndarray, size: int, label: bool = False, fill=0) -> np.ndarray:
    """Resize each slice so the longer side is ``size`` (aspect kept), then pad to size × size."""
    from scipy import ndimage as ndi

    nz, ny, nx = array.shape
    scale = size / max(ny, nx)
    zoomed = ndi.zoom(array, (1, scale, scale), order=0 if label else 1, grid_mode=True,
                      mode="nearest")
    zy, zx = zoomed.shape[1:]
    corner = (-(size - zy) // 2, -(size - zx) // 2)
    return crop_or_pad_in_plane(zoomed, size, corner, fill)
