"""The network's output back on the input's own grid, and into files.

A prediction is made on the preprocessed grid (canonical LPS orientation, 1 mm in-plane, cropped
around the lungs).  Going back undoes each step: the crop is padded, the in-plane resampling
reversed (:func:`covidseg.data.geometry.to_canonical_grid`), and LPS turned back to the file's
direction — a permutation / flip of the axes without interpolation, or for an oblique file a
linear resampling onto its grid.  A multi-class network's lesion voxels each get their more
probable class (1 ground-glass, 2 consolidation).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from covidseg.data.geometry import to_canonical_grid


@dataclass
class OnInputGrid:
    """A prediction on the input file's grid."""

    probability: np.ndarray  # the lesion probability (float)
    mask: np.ndarray  # lesion voxels (bool): probability above the threshold, inside the lungs
    lung: np.ndarray | None  # the lung mask as extracted on the input's grid
    labels: np.ndarray | None  # multi-class networks: 0 / 1 ground-glass / 2 consolidation
    threshold: float  # the decision threshold the mask applies
    restricted: bool  # whether the mask was cut to the lung mask

    @property
    def written(self) -> np.ndarray:
        """What the mask file holds: the label map, or the binary mask."""
        return self.mask if self.labels is None else self.labels


def lesion_probability(probs: np.ndarray) -> np.ndarray:
    """The probability of any lesion from the network's output: itself for a binary network, 1 −
    p(background) from a multi-class network's (C, z, y, x) probabilities."""
    return 1.0 - probs[0] if probs.ndim == 4 else probs


def on_input_grid(probs: np.ndarray, prep, original: sitk.Image, threshold: float,
                  restrict_to_lungs: bool) -> OnInputGrid:
    """The network's ``probs`` on the preprocessed grid of ``prep`` (a
    :class:`covidseg.data.case.CaseOutput`; (z, y, x), or (C, z, y, x) for a multi-class network)
    back on the grid of ``original``."""
    prob_o = to_original(lesion_probability(probs), prep.meta, original)
    # the lung mask as extracted on the input's own grid (lungmask, classical or the given
    # file), not the 1 mm copy the network saw sent back through a second resampling
    lung_o = orient_back(prep.lung_original, prep.meta, original) \
        if prep.lung_original is not None else None
    mask = prob_o > threshold
    if restrict_to_lungs and lung_o is not None:
        mask &= lung_o
    labels = None
    if probs.ndim == 4:  # each lesion voxel gets its more probable class (1 ground-glass, 2 cons.)
        consolidation = to_original(probs[2], prep.meta, original) > \
            to_original(probs[1], prep.meta, original)
        labels = (mask.astype(np.uint8) * (1 + consolidation)).astype(np.uint8)
    return OnInputGrid(prob_o, mask, lung_o, labels, threshold,
                       bool(restrict_to_lungs and lung_o is not None))


def to_original(volume: np.ndarray, meta: dict, original: sitk.Image) -> np.ndarray:
    """A float map on the preprocessed grid → the input file's own grid and orientation."""
    return orient_back(to_canonical_grid(volume, meta), meta, original)


def orient_back(canonical: np.ndarray, meta: dict, original: sitk.Image) -> np.ndarray:
    """A map on the input's grid in canonical (LPS) order → the file's orientation (a bool mask
    stays a bool mask)."""
    g = meta["canonical_geometry"]
    if tuple(g["direction"]) == tuple(original.GetDirection()):
        return canonical  # the file is LPS already: the same voxels
    binary = canonical.dtype == bool
    # LPS back to the file's orientation: a permutation / flip of the axes, no interpolation
    img = sitk.GetImageFromArray(canonical.astype(np.uint8) if binary else canonical)
    img.SetSpacing(g["spacing"])
    img.SetOrigin(g["origin"])
    img.SetDirection(g["direction"])
    code = sitk.DICOMOrientImageFilter_GetOrientationFromDirectionCosines(
        original.GetDirection())
    back = sitk.DICOMOrient(img, code)
    if back.GetSize() != original.GetSize() or not np.allclose(
            back.GetDirection(), original.GetDirection(), atol=1e-6):  # oblique: resample
        back = sitk.Resample(sitk.Cast(img, sitk.sitkFloat32), original, sitk.Transform(),
                             sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        return sitk.GetArrayFromImage(back) > 0.5 if binary else sitk.GetArrayFromImage(back)
    return sitk.GetArrayFromImage(back).astype(bool) if binary else sitk.GetArrayFromImage(back)


def write_probability(prob: np.ndarray, original: sitk.Image, out: Path, case_id: str,
                      as_png: bool) -> Path:
    """The lesion probability map: NIfTI float32 on the input's grid, or for a slice image an
    8-bit PNG of its size (probability × 255, as 2D evaluation tools read maps)."""
    if as_png:
        path = out / f"{case_id}_probability.png"
        img = sitk.GetImageFromArray(np.clip(np.round(prob[0] * 255), 0, 255).astype(np.uint8))
        sitk.WriteImage(img, str(path))
        return path
    path = out / f"{case_id}_probability.nii.gz"
    img = sitk.GetImageFromArray(prob.astype(np.float32))
    img.CopyInformation(original)
    sitk.WriteImage(img, str(path), useCompression=True)
    return path


def write_mask(mask: np.ndarray, original: sitk.Image, path: Path) -> None:
    """A mask on the input's grid: NIfTI, or for a slice image a PNG (binary 0/255 as 2D sets
    ship them; a multi-class label map keeps its labels 0/1/2)."""
    if path.suffix == ".png":
        arr = mask[0].astype(np.uint8)
        sitk.WriteImage(sitk.GetImageFromArray(arr * 255 if mask.dtype == bool else arr),
                        str(path))
        return
    img = sitk.GetImageFromArray(mask.astype(np.uint8))
    img.CopyInformation(original)
    sitk.WriteImage(img, str(path), useCompression=True)
