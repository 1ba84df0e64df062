"""The typed case of preprocessing: :class:`Case` (one case on its way through the steps of
:mod:`covidseg.data.steps`), :class:`CaseMeta` (what ``meta.json`` and ``dataset.json`` record
about it) and :class:`CaseOutput` (what :func:`~covidseg.data.steps.preprocess_case` returns).

Arrays are (z, y, x).  ``CaseMeta.to_dict()`` is the dict written to disk: its keys, their order
and values are the on-disk format; :meth:`CaseMeta.from_json` reads it back
(:meth:`covidseg.data.store.PreprocessedDataset.meta`), ``to_json`` writes the same dict.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import SimpleITK as sitk

from covidseg.data.layouts import CaseRecord
from covidseg.data.readers import geometry_of
from covidseg.data.settings import PreprocessSettings
from covidseg.data.vocabulary import Labels

HIST_BINS_HU = np.linspace(-1250.0, 250.0, 76)
HIST_BINS_DISPLAY = np.linspace(0.0, 255.0, 52)
HIST_BINS_Z = np.linspace(-5.0, 5.0, 81)


@dataclass
class Case:
    """One case between two steps.  ``array``, ``infection``, ``lung``, ``truth`` are the working
    arrays (original grid, then resampled, then cropped); ``image`` is the canonical (LPS) image
    they started from and ``*_original`` the masks kept on its grid."""

    record: CaseRecord
    image: sitk.Image  # canonical orientation: the grid original-grid metrics are scored on
    geometry: dict  # the input file's own geometry, to write predictions back
    slice_mode: bool  # an image file or a one-slice volume: fitted to image_size, never cut
    array: np.ndarray  # float32 intensities (after normalise: the values before it, for figures)
    infection: np.ndarray | None  # binary, or a 0/1/2 label map with labels=multiclass
    truth: np.ndarray | None  # oracle lesions of an unlabelled demo case
    intensity: str  # the scheme used: hu or image
    looked_like_hu: bool
    lung: np.ndarray | None = None
    lung_method: str = ""
    lung_note: str = ""
    infection_in_lung: float | None = None  # share of the lesion inside the extracted lungs
    infection_original: np.ndarray | None = None
    lung_original: np.ndarray | None = None
    fill: float = 0.0  # the darkest input value: what resampling and padding bring in
    spacing: list[float] | None = None  # (x, y, z) mm after resampling; None for 2D slices
    normalised: np.ndarray | None = None
    region: np.ndarray | None = None  # the voxels the intensity statistics were taken over
    stats: dict = field(default_factory=dict)  # norm_mean, norm_std
    crop: tuple[int, int] | None = None  # in-plane corner (y, x) of the crop on the 1 mm grid
    lung_lost_by_crop: float = 0.0

    @property
    def spacing_in(self) -> list[float]:
        return [float(s) for s in self.image.GetSpacing()]


def histogram(values: np.ndarray, bins: np.ndarray) -> list[int]:
    return np.histogram(values, bins=bins)[0].astype(int).tolist()


@dataclass
class CaseMeta:
    """A preprocessed case's metadata (``meta.json``; one entry of ``dataset.json``'s cases)."""

    case_id: str
    source: str
    labelled: bool
    split: str | None
    grade: str | None
    task: str
    has_truth: bool
    slice_image: bool
    slice_fit: str | None  # 2D slices only
    labels: str  # binary or multiclass
    canonical_geometry: dict  # the grid original-grid metrics are scored on
    intensity: str  # hu or image
    looked_like_hu: bool
    lung_method: str  # lungmask, classical, provided or none
    lung_note: str  # why the method differs from the one asked for
    shape: list[int]  # stored (z, y, x)
    spacing: list[float] | None  # stored (x, y, z) mm; None for 2D slices (pixel units)
    spacing_in: list[float]
    geometry: dict  # original geometry, to write predictions back
    crop_corner_yx: list[int] | None
    lung_lost_by_crop: float
    infection_in_lung: float | None
    lesion_fraction: float | None  # in the lungs (the whole slice without lungs)
    lung_volume_ml: float | None
    lesion_volume_ml: float | None
    lesion_pixels: int | None
    lesion_slices: int | None
    before_mean: float | None  # of the region's values before normalisation
    before_std: float | None
    before_p1: float | None
    before_p99: float | None
    hist_before: list[int]  # HIST_BINS_HU (hu) or HIST_BINS_DISPLAY (image)
    hist_after: list[int]  # HIST_BINS_Z
    norm_mean: float  # the statistics of the z-score
    norm_std: float
    class_pixels: list[int] | None = None  # labels=multiclass: ground-glass, consolidation

    def to_dict(self) -> dict:
        """The on-disk dict (field order; ``class_pixels`` only with labels=multiclass)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if out["class_pixels"] is None:
            del out["class_pixels"]
        return out

    to_json = to_dict

    @classmethod
    def from_json(cls, d: dict) -> CaseMeta:
        """A case's metadata as stored; what a dataset preprocessed by an older covidseg did not
        record (``canonical_geometry`` …) reads as None, keys this version does not know are
        left out."""
        return cls(**{f.name: d.get(f.name) for f in fields(cls)})

    @classmethod
    def of(cls, case: Case, settings: PreprocessSettings) -> CaseMeta:
        """The metadata of a case that went through every step."""
        rec, out, lung, sp = case.record, case.normalised, case.lung, case.spacing
        voxel_ml = (sp[0] * sp[1] * sp[2] / 1000.0) if sp else None
        lesion = case.infection > 0 if case.infection is not None else None
        before = case.array[case.region]
        return cls(
            case_id=rec.case_id, source=rec.source, labelled=bool(case.infection is not None),
            split=rec.split, grade=rec.grade, task=rec.task, has_truth=case.truth is not None,
            slice_image=case.slice_mode,
            slice_fit=settings.slice_fit if case.slice_mode else None,
            labels=settings.labels, canonical_geometry=geometry_of(case.image),
            intensity=case.intensity, looked_like_hu=case.looked_like_hu,
            lung_method=case.lung_method, lung_note=case.lung_note, shape=list(out.shape),
            spacing=sp, spacing_in=case.spacing_in, geometry=case.geometry,
            crop_corner_yx=list(case.crop) if case.crop else None,
            lung_lost_by_crop=case.lung_lost_by_crop, infection_in_lung=case.infection_in_lung,
            lesion_fraction=(float(lesion[lung].mean())
                             if (lesion is not None and lung is not None and lung.any()) else
                             (float(lesion.mean()) if lesion is not None else None)),
            lung_volume_ml=float(lung.sum() * voxel_ml) if (lung is not None and voxel_ml)
            else None,
            lesion_volume_ml=float(lesion.sum() * voxel_ml) if (lesion is not None and voxel_ml)
            else None,
            lesion_pixels=int(lesion.sum()) if lesion is not None else None,
            lesion_slices=int(lesion.any(axis=(1, 2)).sum()) if lesion is not None else None,
            before_mean=float(before.mean()) if before.size else None,
            before_std=float(before.std()) if before.size else None,
            before_p1=float(np.percentile(before, 1)) if before.size else None,
            before_p99=float(np.percentile(before, 99)) if before.size else None,
            hist_before=histogram(before, HIST_BINS_HU if case.intensity == "hu"
                                  else HIST_BINS_DISPLAY),
            hist_after=histogram(out[case.region], HIST_BINS_Z),
            **case.stats,
            class_pixels=([int((case.infection == k).sum()) for k in (1, 2)]
                          if settings.labels == Labels.MULTICLASS and case.infection is not None
                          else None),
        )


@dataclass
class CaseOutput:
    """A preprocessed case: its arrays on the stored grid and its metadata dict."""

    image: np.ndarray
    infection: np.ndarray | None
    lung: np.ndarray | None
    meta: dict
    before: np.ndarray | None = None  # resampled intensities before normalisation (figures)
    truth: np.ndarray | None = None  # oracle lesions of an unlabelled demo case
    original: np.ndarray | None = None  # the reference mask on the original (canonical) grid
    lung_original: np.ndarray | None = None  # the lung mask on the original (canonical) grid
