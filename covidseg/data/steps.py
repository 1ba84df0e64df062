"""Preprocessing one case, as named steps over a typed :class:`~covidseg.data.case.Case`
(SPEC §3 preprocess), chained by :func:`preprocess_case` — for the dataset build and for
``predict`` alike, so that a new volume goes through exactly the training data's pipeline:

1. :func:`read_case`: read (SimpleITK) and reorient to LPS; check masks against the image (shape,
   geometry, binary values) and the image for NaN; choose the intensity scheme (``auto``: ``hu``
   when the values look like HU, else ``image``);
2. :func:`extract_lungs` on the original grid (lungmask with local weights on HU cases, the
   classical method otherwise, the dataset's own masks with ``provided``, nothing with ``none``);
3. :func:`resample` in-plane to 1 × 1 mm, slice spacing unchanged (masks nearest neighbour); 2D
   slices (image files, which have no physical spacing, and one-slice volumes) are fitted to
   ``image_size`` instead (``slice_fit``: resized or padded, never cut);
4. :func:`normalise`: ``hu``: clip to the lung window and z-score with the lung voxels' mean and
   std; ``image``: z-score over the lungs (or the foreground when there are none); outside the
   lungs → 0;
5. :func:`crop`: optionally crop/pad in-plane to ``image_size`` around the lungs;
6. describe it (:class:`~covidseg.data.case.CaseMeta`).

Each step returns a new case; a bad input raises a one-line
:class:`~covidseg.base.errors.CaseError`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from covidseg.base.errors import EmptyMask, MissingInput, NaNValues
from covidseg.data.case import Case, CaseMeta, CaseOutput
from covidseg.data.geometry import (
    check_geometry,
    crop_box_in_plane,
    crop_or_pad_in_plane,
    resample_in_plane,
    resize_slices,
)
from covidseg.data.intensity import (
    choose_intensity_mode,
    display_map,
    foreground_mask,
    image_zscore,
    lung_window_zscore,
)
from covidseg.data.layouts import CaseRecord
from covidseg.data.lungs import lung_method
from covidseg.data.masks import read_mask
from covidseg.data.readers import geometry_of, is_slice_image, read_image, to_canonical
from covidseg.data.settings import PreprocessSettings
from covidseg.data.vocabulary import Labels


def read_case(record: CaseRecord, settings: PreprocessSettings,
              original: sitk.Image | None = None) -> Case:
    """1. The case on its canonical grid, masks checked, intensity scheme chosen (``original``:
    its image, when the caller has read it already)."""
    original = original if original is not None else read_image(record.image)
    image = to_canonical(original)
    slice_mode = is_slice_image(Path(record.image)) or image.GetSize()[2] == 1
    check_geometry(image, record.image, slice_mode, settings.min_size,
                   settings.max_field_of_view_mm, settings.max_voxels)
    arr = sitk.GetArrayFromImage(image).astype(np.float32)
    n_bad = int(arr.size - np.isfinite(arr).sum())
    if n_bad:
        raise NaNValues(record.image, f"{n_bad} voxels are NaN or infinite")
    infection = read_mask(record.infection, image, record.image, "infection", settings.labels,
                          record.values_of("infection")) if record.infection else None
    truth = read_mask(record.truth, image, record.image, "infection") if record.truth else None
    mode, hu_like = choose_intensity_mode(arr, settings.intensity, record.image)
    return Case(record, image, geometry_of(original),
                slice_mode=slice_mode,
                array=arr, infection=infection, truth=truth, intensity=mode,
                looked_like_hu=hu_like, infection_original=infection, fill=float(arr.min()))


def choose_lung_method(requested: str, hu: bool, slice_mode: bool, weights: Path | None,
                       record: CaseRecord) -> tuple[str, str]:
    """(method, note: why it differs from the one requested)."""
    if requested == "auto":
        if slice_mode:
            return "none", "2D slice image"
        if weights is not None and hu:
            return "lungmask", ""
        return "classical", "" if weights is None else "lungmask skipped: not HU"
    if requested == "lungmask" and not hu:
        return "classical", "lungmask skipped: not HU"
    if requested == "provided" and not record.lung:
        raise MissingInput(record.image, "lung_method=provided but this case has no lung mask")
    return requested, ""


def extract_lungs(case: Case, settings: PreprocessSettings, weights: Path | None,
                  force_cpu: bool = True) -> Case:
    """2. The lung mask on the original grid, and the share of the lesion inside it."""
    rec, hu = case.record, case.intensity == "hu"
    method, note = choose_lung_method(settings.lung_method, hu, case.slice_mode, weights, rec)
    lung = lung_method(method)(case, weights, force_cpu)
    if lung is not None and not lung.any():
        raise EmptyMask(rec.lung if method == "provided" else rec.image,
                        f"lung extraction ({method}) found no lung voxels")
    coverage = None
    if case.infection is not None and lung is not None and case.infection.any():
        lesion = case.infection > 0  # a multi-class label map counts each lesion voxel once
        coverage = float((lesion & lung).sum() / lesion.sum())
    return replace(case, lung=lung, lung_method=method, lung_note=note,
                   infection_in_lung=coverage, lung_original=lung)


def resample(case: Case, settings: PreprocessSettings) -> Case:
    """3. Volumes to 1 × 1 mm in-plane (slice spacing kept); 2D slices fitted to image_size."""
    if case.slice_mode:
        size, fit = settings.image_size, settings.slice_fit

        def move(mask):
            if mask is None or not size:
                return mask
            binary = (mask.dtype == bool or settings.labels != Labels.MULTICLASS
                      or mask is not case.infection)
            out = resize_slices(mask.astype(np.uint8), size, label=True, fit=fit, binary=binary)
            return out.astype(bool) if mask.dtype == bool else out

        array = resize_slices(case.array, size, fill=case.fill, fit=fit) if size else case.array
        spacing = None  # pixel units: a slice's spacing (if any) is kept for original-grid metrics
    else:
        image = case.image

        def move(mask):
            if mask is None:
                return None
            m = sitk.GetImageFromArray(mask.astype(np.uint8))
            m.CopyInformation(image)
            out = sitk.GetArrayFromImage(resample_in_plane(m, 1.0, label=True))
            return out.astype(bool) if mask.dtype == bool else out

        array = sitk.GetArrayFromImage(resample_in_plane(sitk.Cast(image, sitk.sitkFloat32), 1.0,
                                                         fill=case.fill))
        spacing = [1.0, 1.0, case.spacing_in[2]]
    return replace(case, array=array, infection=move(case.infection), lung=move(case.lung),
                   truth=move(case.truth), spacing=spacing)


def normalise(case: Case, settings: PreprocessSettings) -> Case:
    """4. The z-scored intensities, the region their statistics came from, the statistics."""
    region, array = case.lung, case.array
    if case.intensity == "hu":
        if region is None:
            region = foreground_mask(array)
        out, stats = lung_window_zscore(array, region, settings.window, settings.hist_eq)
    else:
        scheme = display_map if case.intensity == "display" else image_zscore
        out, stats = scheme(array, region, settings.hist_eq, zero_outside=region is not None)
        if region is None:
            region = foreground_mask(array)
    return replace(case, normalised=out, region=region, stats=stats)


def crop(case: Case, settings: PreprocessSettings) -> Case:
    """5. With ``image_size``, a volume cropped/padded in-plane around its lungs (1 mm grid)."""
    size = settings.image_size
    if not size or case.slice_mode:
        return case
    lung, region, out = case.lung, case.region, case.normalised
    ref = lung if lung is not None and lung.any() else region
    ys, xs = np.nonzero(ref.any(axis=0))
    centre = ((ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2) if ys.size else \
        (out.shape[1] / 2, out.shape[2] / 2)
    corner = crop_box_in_plane(out.shape[1:], size, centre)

    def cut(array, fill):
        return crop_or_pad_in_plane(array, size, corner, fill) if array is not None else None

    kept = cut(lung, False)
    before = int(lung.sum()) if lung is not None else 0
    return replace(case, normalised=cut(out, 0.0), infection=cut(case.infection, 0), lung=kept,
                   truth=cut(case.truth, False), region=cut(region, False),
                   array=cut(case.array, case.fill), crop=corner,
                   lung_lost_by_crop=1.0 - float(kept.sum()) / before if before else 0.0)


def preprocess_case(record: CaseRecord, settings: PreprocessSettings, weights: Path | None,
                    force_cpu: bool = True, keep_before: bool = False,
                    original: sitk.Image | None = None) -> CaseOutput:
    """Preprocess one case: the steps in order, then its metadata (``keep_before``: keep the
    intensities before normalisation, for figures; ``original``: its image, when the caller has
    read it already); raises a one-line :class:`~covidseg.base.errors.CaseError` on bad input."""
    case = read_case(record, settings, original)
    case = extract_lungs(case, settings, weights, force_cpu=force_cpu)
    case = crop(normalise(resample(case, settings), settings), settings)
    return CaseOutput(case.normalised, case.infection, case.lung,
                      CaseMeta.of(case, settings).to_dict(), case.array if keep_before else None,
                      case.truth, case.infection_original, case.lung_original)
