"""Dataset fingerprint: spacing and thickness distribution, intensity statistics, lesion fraction.

Computed from the per-case metadata that preprocessing stores, saved as ``fingerprint.json``
with the dataset and logged as ``fp_*`` metrics.
"""

from __future__ import annotations

from collections import Counter

import numpy as np


def _stats(values) -> dict | None:
    v = np.array([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return None
    return {"min": float(v.min()), "median": float(np.median(v)), "mean": float(v.mean()),
            "max": float(v.max()), "n": int(v.size)}


def dataset_fingerprint(metas: list[dict], n_failed: int = 0) -> dict:
    volumes = [m for m in metas if not m.get("slice_image")]
    labelled = [m for m in metas if m["labelled"]]
    infection = [m for m in labelled if m.get("task", "infection") == "infection"]
    hu_cases = [m for m in metas if m["intensity"] == "hu"]
    per_source = {}
    for src in sorted({m["source"] for m in metas}):
        ms = [m for m in volumes if m["source"] == src]
        per_source[src] = {
            "n": sum(m["source"] == src for m in metas),
            "spacing_xy": _stats(m["spacing_in"][0] for m in ms),
            "thickness": _stats(m["spacing_in"][2] for m in ms),
        }
    return {
        "n_cases": len(metas),
        "n_labelled": len(labelled),
        "n_unlabelled": len(metas) - len(labelled),
        "n_infection_labelled": len(infection),
        "tasks": dict(Counter(m.get("task", "infection") for m in labelled)),
        "n_failed": n_failed,
        "n_slices": int(sum(m["shape"][0] for m in metas)),
        "spacing_xy": _stats(m["spacing_in"][0] for m in volumes),
        "thickness": _stats(m["spacing_in"][2] for m in volumes),
        "slices_per_volume": _stats(m["shape"][0] for m in volumes),
        "intensity_modes": dict(Counter(m["intensity"] for m in metas)),
        "lung_methods": dict(Counter(m["lung_method"] for m in metas)),
        "lung_mean_hu": _stats(m["before_mean"] for m in hu_cases),
        "lung_std_hu": _stats(m["before_std"] for m in hu_cases),
        "lesion_fraction": _stats(m["lesion_fraction"] for m in infection),
        "lesion_volume_ml": _stats(m["lesion_volume_ml"] for m in infection),
        "lung_volume_ml": _stats(m["lung_volume_ml"] for m in metas),
        "infection_in_lung": _stats(m["infection_in_lung"] for m in infection),
        "lung_lost_by_crop": _stats(m.get("lung_lost_by_crop") for m in metas),
        "per_source": per_source,
    }


def fingerprint_metrics(fp: dict) -> dict[str, float]:
    """Flat ``fp_*`` metrics for MLflow."""
    out: dict[str, float] = {}
    for key in ("n_labelled", "n_unlabelled", "n_slices"):
        out[f"fp_{key}"] = float(fp[key])
    for key, stats in (("spacing_xy", ("min", "median", "max")),
                       ("thickness", ("min", "median", "max")),
                       ("lung_mean_hu", ("median",)), ("lung_std_hu", ("median",)),
                       ("lesion_fraction", ("mean", "median", "max")),
                       ("lesion_volume_ml", ("median",)), ("lung_volume_ml", ("median",)),
                       ("infection_in_lung", ("min", "mean")), ("lung_lost_by_crop", ("max",))):
        s = fp.get(key)
        if s:
            for stat in stats:
                out[f"fp_{key}_{stat}"] = s[stat]
    for task, n in fp.get("tasks", {}).items():
        out[f"fp_task_{task}_cases"] = float(n)
    for mode, n in fp["intensity_modes"].items():
        out[f"fp_intensity_{mode}_cases"] = float(n)
    for method, n in fp["lung_methods"].items():
        out[f"fp_lung_{method}_cases"] = float(n)
    return out
