"""Lung extraction: lungmask (local weights only), a classical method, or a provided mask.

lungmask never downloads here: it runs only when its weights are a local file (``lung_weights``
or the file already in lungmask's own cache under ``$TORCH_HOME/hub/checkpoints``), and only on
cases in Hounsfield units (it silently returns empty masks otherwise).  The classical method is
the draft's threshold / connected-components route: air-like voxels not connected to the outside,
the largest components, holes (vessels) filled and a closing in millimetres that takes back
juxtapleural lesions.

:data:`LUNG_METHODS` maps each ``lung_method`` (once ``auto`` is resolved,
:func:`covidseg.data.steps.choose_lung_method`) to how it extracts a case's lungs.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage as ndi

from covidseg.base.errors import ConfigError, first_line
from covidseg.data.intensity import otsu_threshold
from covidseg.data.masks import read_mask
from covidseg.data.vocabulary import LungMethod

if TYPE_CHECKING:
    from covidseg.data.case import Case

HU_LUNG_THRESHOLD = -320.0


def _bounding_box(mask: np.ndarray, pad) -> list[tuple[int, int, int]]:
    """(start, stop, pad) per axis of the mask's bounding box (the mask is not empty)."""
    box = []
    for axis, p in enumerate(pad):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append((int(hit[0]), int(hit[-1]) + 1, int(p)))
    return box


def fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """The same as ``np.stack([ndi.binary_fill_holes(s) for s in mask])``, in one labelling pass:
    background components of each slice (4-connected, never across slices) that do not reach the
    slice's border are holes.  Computed in the mask's in-plane bounding box plus a one-voxel
    background ring, which every border-connected background component of a slice touches."""
    if not mask.any():
        return mask.copy()
    box = _bounding_box(mask, (0, 1, 1))
    inner = tuple(slice(a, b) for a, b, _ in box)
    m = np.pad(mask[inner], [(0, 0), (1, 1), (1, 1)])
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndi.generate_binary_structure(2, 1)
    labels, n = ndi.label(~m, structure=structure)
    border = np.concatenate([labels[:, 0, :].ravel(), labels[:, -1, :].ravel(),
                             labels[:, :, 0].ravel(), labels[:, :, -1].ravel()])
    hole = np.ones(n + 1, dtype=bool)
    hole[0] = False
    hole[border] = False
    out = mask.copy()
    out[inner] |= hole[labels[:, 1:-1, 1:-1]]
    return out


# relative band around radius² where the float32 distance map is re-checked exactly (its error
# near 8 mm is ~1e-5 relative, this band is 100 × wider)
_EXACT_BAND = 1e-3


def _dilate_mm(mask: np.ndarray, radius_mm: float, sampling) -> np.ndarray:
    """Voxels whose distance to ``mask`` is at most ``radius_mm`` — what
    ``ndi.distance_transform_edt(~mask, sampling=sampling) <= radius_mm`` gives, at about a third
    of its cost: ITK's Maurer distance map (float32, multi-threaded), and the voxels whose squared
    distance lies within ``_EXACT_BAND`` of radius² decided exactly as scipy computes a distance
    (float64, ``sqrt(((z·sz)² + (y·sy)²) + (x·sx)²)``): with spacings such as 0.8 mm, many voxels
    lie at exactly 8 mm and float32 alone would drop them (measured: 293 of 2238 closing
    voxels)."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(mask.view(np.uint8))
    img.SetSpacing([float(s) for s in sampling[::-1]])
    f = sitk.SignedMaurerDistanceMapImageFilter()
    f.SetInsideIsPositive(False)  # the mask itself: ≤ 0
    f.SetSquaredDistance(True)
    f.SetUseImageSpacing(True)
    f.SetBackgroundValue(0)
    d2 = sitk.GetArrayFromImage(f.Execute(img))
    r2 = radius_mm * radius_mm
    out = d2 <= r2
    band = np.argwhere((d2 > r2 * (1 - _EXACT_BAND)) & (d2 < r2 * (1 + _EXACT_BAND)))
    if not len(band):
        return out
    # offsets whose float64 distance is ≤ radius but not much below: a mask voxel nearer than the
    # band's lower edge would have put the voxel below the band
    reach = [int(np.floor(radius_mm / s)) for s in sampling]
    grid = np.stack(np.meshgrid(*[np.arange(-k, k + 1) for k in reach], indexing="ij"), -1)
    grid = grid.reshape(-1, 3)
    sq = grid.astype(np.float64) * np.asarray(sampling, dtype=np.float64)
    sq = sq * sq
    dist = np.sqrt((sq[:, 0] + sq[:, 1]) + sq[:, 2])
    offsets = grid[(dist <= radius_mm) & (dist * dist >= r2 * (1 - 2 * _EXACT_BAND))]
    shape = np.asarray(mask.shape)
    for start in range(0, len(band), 4096):
        chunk = band[start:start + 4096]
        idx = chunk[:, None, :] + offsets[None, :, :]
        inside = np.all((idx >= 0) & (idx < shape), axis=-1)
        idx = np.where(inside[..., None], idx, 0)
        hit = mask[idx[..., 0], idx[..., 1], idx[..., 2]] & inside
        out[tuple(chunk.T)] = hit.any(axis=1)
    return out


def _closing_mm(mask: np.ndarray, radius_mm: float, sampling) -> np.ndarray:
    """Morphological closing with a ball of ``radius_mm`` (a dilation, then the dilation of the
    complement), computed in the mask's bounding box padded by the radius (+1 voxel): nothing
    outside it can change, and the lungs fill about half of a CT's field of view."""
    if radius_mm <= 0 or not mask.any():
        return mask
    pad = [int(np.ceil(radius_mm / s)) + 1 for s in sampling]
    box = _bounding_box(mask, pad)
    m = np.pad(mask[tuple(slice(a, b) for a, b, _ in box)], [(p, p) for _, _, p in box])
    dilated = _dilate_mm(m, radius_mm, sampling)
    closed = ~_dilate_mm(~dilated, radius_mm, sampling)
    out = mask.copy()
    out[tuple(slice(a, b) for a, b, _ in box)] |= \
        closed[tuple(slice(p, p + b - a) for a, b, p in box)]
    return out


def classical_lung_mask(array: np.ndarray, spacing_xyz, hu: bool = True,
                        closing_mm: float = 8.0) -> np.ndarray:
    """Binary lung mask of a (z, y, x) volume by thresholding and connected components."""
    sampling = (float(spacing_xyz[2]), float(spacing_xyz[1]), float(spacing_xyz[0]))
    threshold = HU_LUNG_THRESHOLD if hu else \
        otsu_threshold(array[:: max(1, array.shape[0] // 16)].ravel())
    air = array < threshold
    labels, n = ndi.label(air)
    if n == 0:
        return np.zeros(array.shape, dtype=bool)
    # components touching the in-plane border are the air around the patient
    border = np.unique(np.concatenate([labels[:, 0, :].ravel(), labels[:, -1, :].ravel(),
                                       labels[:, :, 0].ravel(), labels[:, :, -1].ravel()]))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:].astype(np.float64)
    sizes[border[border > 0] - 1] = 0
    voxel_ml = sampling[0] * sampling[1] * sampling[2] / 1000.0
    order = np.argsort(sizes)[::-1]
    keep = [i + 1 for i in order[:2]
            if sizes[i] * voxel_ml > 0.0 and sizes[i] >= 0.1 * sizes[order[0]]]
    keep = [k for k in keep if sizes[k - 1] > 0]
    selected = np.zeros(n + 1, dtype=bool)
    selected[keep] = True
    lung = selected[labels]
    if not lung.any():
        return lung
    # vessels inside the lung are holes in the air mask: fill per slice, then close in mm
    lung = fill_holes_per_slice(lung)
    lung = _closing_mm(lung, closing_mm, sampling)
    return fill_holes_per_slice(lung)


def find_lungmask_weights(lung_weights: str | None, model: str = "R231CovidWeb") -> Path | None:
    """A local lungmask weight file, or None: the given path, else lungmask's own cache."""
    if lung_weights:
        p = Path(lung_weights).expanduser()
        if not p.is_file():
            raise ConfigError(f"{p}: lung_weights file does not exist")
        return p
    try:
        import torch

        hub = Path(torch.hub.get_dir()) / "checkpoints"
    except Exception:  # pragma: no cover - torch always importable here
        return None
    names = {
        "R231": "unet_r231-d5d2fc3d.pth",
        "R231CovidWeb": "unet_r231covid-0de78a7e.pth",
        "LTRCLobes": "unet_ltrclobes-3a07043d.pth",
    }
    p = hub / names.get(model, "")
    return p if p.is_file() else None


_INFERERS: dict[str, object] = {}


def lungmask_lung_mask(image, weights: Path, force_cpu: bool = False) -> np.ndarray:
    """lungmask on a SimpleITK image in HU, with local weights; returns a (z, y, x) bool mask."""
    key = f"{Path(weights).resolve()}|{force_cpu}"
    if key not in _INFERERS:
        saved = warnings.filters[:]
        try:  # `import lungmask.mask` silences every UserWarning in the process: undo that
            from lungmask.mask import LMInferer
        finally:
            warnings.filters[:] = saved
        os.environ.setdefault("TQDM_DISABLE", "1")
        try:
            _INFERERS[key] = LMInferer(modelpath=str(weights), force_cpu=force_cpu,
                                       tqdm_disable=True)
        except Exception as exc:  # wrong file layout etc.
            raise ConfigError(f"{weights}: not a usable lungmask weight file "
                              f"({type(exc).__name__}: {first_line(exc, 200)})") from exc
    return _INFERERS[key].apply(image) > 0


def _lungmask(case: Case, weights: Path | None, force_cpu: bool) -> np.ndarray:
    return lungmask_lung_mask(case.image, weights, force_cpu=force_cpu)


def _classical(case: Case, weights: Path | None, force_cpu: bool) -> np.ndarray:
    return classical_lung_mask(case.array, case.image.GetSpacing(), hu=case.intensity == "hu")


def _provided(case: Case, weights: Path | None, force_cpu: bool) -> np.ndarray:
    rec = case.record
    return read_mask(rec.lung, case.image, rec.image, "lung", values=rec.values_of("lung"))


def _no_lungs(case: Case, weights: Path | None, force_cpu: bool) -> None:
    return None


# each method's lung mask of a case on its original grid (None: no lung mask), given the local
# lungmask weights (or None) and whether lungmask must run on the CPU
LUNG_METHODS: dict[LungMethod, Callable[[Case, Path | None, bool], np.ndarray | None]] = {
    LungMethod.LUNGMASK: _lungmask, LungMethod.CLASSICAL: _classical,
    LungMethod.PROVIDED: _provided, LungMethod.NONE: _no_lungs}


def lung_method(name: str) -> Callable[[Case, Path | None, bool], np.ndarray | None]:
    """The extraction of ``lung_method=name`` (``auto`` resolved before)."""
    if name not in LUNG_METHODS:
        raise ConfigError(f"lung_method={name!r} is not one of {', '.join(LUNG_METHODS)}")
    return LUNG_METHODS[name]
