"""What ``predict`` reports per input: lung and lesion volume (ml), % of lung involved and the
MosMed-style severity class CT-0 (0 %), CT-1 (< 25 %), CT-2 (25-50 %), CT-3 (50-75 %),
CT-4 (> 75 %).

    lesion volume  = lesion voxels × voxel volume      (a slice image: pixels, no volume)
    involvement %  = 100 · |lesion ∩ lung| / |lung|    (none without a lung mask)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from covidseg.inference.export import OnInputGrid


def severity_class(percent: float | None) -> str | None:
    """MosMed CT-0..CT-4 from the % of lung involved (boundaries 25/50/75 belong to the lower
    class's upper range: 25 → CT-2, 50 → CT-2, 75 → CT-3)."""
    if percent is None:
        return None
    if percent <= 0:
        return "CT-0"
    if percent < 25:
        return "CT-1"
    if percent <= 50:
        return "CT-2"
    if percent <= 75:
        return "CT-3"
    return "CT-4"


def measurements(grid: OnInputGrid, original: sitk.Image, slice_image: bool) -> dict:
    """The report's volumes, involvement and severity of a prediction on ``original``'s grid."""
    mask, lung = grid.mask, grid.lung
    voxel_ml = float(np.prod(original.GetSpacing())) / 1000.0 if not slice_image else None
    percent = (100.0 * float((mask & lung).sum()) / float(lung.sum())
               if lung is not None and lung.any() else None)
    return {
        "lung_volume_ml": float(lung.sum() * voxel_ml) if (voxel_ml and lung is not None)
        else None,
        "lesion_volume_ml": float(mask.sum() * voxel_ml) if voxel_ml else None,
        "lesion_pixels": int(mask.sum()) if voxel_ml is None else None,
        "involvement_percent": percent, "severity": severity_class(percent),
    }


def case_report(path: Path, case_id: str, meta: dict, original: sitk.Image, grid: OnInputGrid,
                files: dict[str, Path | None]) -> dict:
    """One input's report (``CASE_report.json``, a row of ``predictions.csv``); ``meta``: the
    preprocessed case's metadata; ``files``: the written ``infection``, ``probability``, ``lung``
    and ``dicom_seg`` files (None or absent: not written)."""
    name = {k: (f.name if f else None) for k, f in files.items()}
    return {
        "case_id": case_id, "input": path.name,
        **measurements(grid, original, meta["slice_image"]),
        "intensity": meta["intensity"], "lung_method": meta["lung_method"],
        "threshold": grid.threshold, "restrict_to_lungs": grid.restricted,
        "size": list(original.GetSize()), "spacing_mm": [float(s) for s in original.GetSpacing()],
        "infection_mask": name["infection"], "probability_map": name.get("probability"),
        "lung_mask": name.get("lung"), "dicom_seg": name.get("dicom_seg"),
    }
