"""Lung extraction: lungmask (local weights only), a classical method, or a provided mask.

lungmask never downloads here: it runs only when its weights are a local file (``lung_weights``
or the file already in lungmask's own cache under ``$TORCH_HOME/hub/checkpoints``), and only on
cases in Hounsfield units (it silently returns empty masks otherwise).  The classical method is
the draft's threshold / connected-components route: air-like voxels not connected to the outside,
the largest components, holes (vessels) filled and a closing in millimetres that takes back
juxtapleural lesions.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from covidseg.data.intensity import otsu_threshold
from covidseg.errors import ConfigError

LUNG_METHODS = ("auto", "lungmask", "classical", "provided", "none")
LUNGMASK_MODELS = ("R231", "R231CovidWeb", "LTRCLobes")
HU_LUNG_THRESHOLD = -320.0


def _closing_mm(mask: np.ndarray, radius_mm: float, sampling) -> np.ndarray:
    """Morphological closing with a ball of ``radius_mm`` via two distance transforms, computed in
    the mask's bounding box padded by the radius (+1 voxel): nothing outside it can change, and
    the lungs fill about half of a CT's field of view, so this halves the work."""
    if radius_mm <= 0 or not mask.any():
        return mask
    pad = [int(np.ceil(radius_mm / s)) + 1 for s in sampling]
    box = []
    for axis, p in enumerate(pad):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append((hit[0], hit[-1] + 1, p))
    m = np.pad(mask[tuple(slice(a, b) for a, b, _ in box)], [(p, p) for _, _, p in box])
    dilated = ndi.distance_transform_edt(~m, sampling=sampling) <= radius_mm
    closed = ndi.distance_transform_edt(dilated, sampling=sampling) > radius_mm
    out = mask.copy()
    out[tuple(slice(a, b) for a, b, _ in box)] |= closed[tuple(slice(p, p + b - a) for a, b, p in box)]
    return out


def classical_lung_mask(array: np.ndarray, spacing_xyz, hu: bool = True,
                        closing_mm: float = 8.0) -> np.ndarray:
    """Binary lung mask of a (z, y, x) volume by thresholding and connected components."""
    sampling = (float(spacing_xyz[2]), float(spacing_xyz[1]), float(spacing_xyz[0]))
    threshold = HU_LUNG_THRESHOLD if hu else otsu_threshold(array[:: max(1, array.shape[0] // 16)].ravel())
    air = array < threshold
    labels, n = ndi.label(air)
    if n == 0:
        return np.zeros(array.shape, dtype=bool)
    # components touching the in-plane border are the air around the patient
    border = np.unique(np.concatenate([labels[:, 0, :].ravel(), labels[:, -1, :].ravel(),
                                       labels[:, :, 0].ravel(), labels[:, :, -1].ravel()]))
    sizes = ndi.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
    sizes[border[border > 0] - 1] = 0
    voxel_ml = sampling[0] * sampling[1] * sampling[2] / 1000.0
    order = np.argsort(sizes)[::-1]
    keep = [i + 1 for i in order[:2] if sizes[i] * voxel_ml > 0.0 and sizes[i] >= 0.1 * sizes[order[0]]]
    keep = [k for k in keep if sizes[k - 1] > 0]
    lung = np.isin(labels, keep)
    if not lung.any():
        return lung
    # vessels inside the lung are holes in the air mask: fill per slice, then close in mm
    lung = np.stack([ndi.binary_fill_holes(s) for s in lung])
    lung = _closing_mm(lung, closing_mm, sampling)
    lung = np.stack([ndi.binary_fill_holes(s) for s in lung])
    return lung


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
            _INFERERS[key] = LMInferer(modelpath=str(weights), force_cpu=force_cpu, tqdm_disable=True)
        except Exception as exc:  # wrong file layout etc.
            raise ConfigError(f"{weights}: not a usable lungmask weight file "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    return _INFERERS[key].apply(image) > 0
