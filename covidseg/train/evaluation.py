"""Scoring a network on labelled volumes: one row per volume, summaries, tables and figures.

Volume-level metrics (3D, millimetres from the stored spacing) are named ``volume_*``;
``slice_dice`` is the mean 2D Dice over the slices whose reference contains lesion (slices with
neither lesion nor prediction would otherwise dominate with a Dice of 1).  Predictions are
thresholded at 0.5 and not restricted to the lung mask (the model's own output is scored).
"""

from __future__ import annotations

import numpy as np

from covidseg.data.store import PreprocessedDataset
from covidseg.inference import predict_volume
from covidseg.train import figures
from covidseg.train.metrics import overlap_metrics, summarise, volume_metrics

VOLUME_KEYS = ("dice", "iou", "hd95", "nsd", "sensitivity", "precision")


def spacing_zyx(meta: dict) -> tuple[float, float, float]:
    """(z, y, x) spacing of a preprocessed case in mm; pixel units for 2D slice images."""
    sp = meta.get("spacing")
    return (1.0, 1.0, 1.0) if not sp else (float(sp[2]), float(sp[1]), float(sp[0]))


def score_case(pred: np.ndarray, ref: np.ndarray, meta: dict) -> dict:
    sp = spacing_zyx(meta)
    row = {f"volume_{k}": v for k, v in volume_metrics(pred, ref, sp).items()}
    lesion_slices = [z for z in range(ref.shape[0]) if ref[z].any()]
    row["slice_dice"] = (float(np.mean([overlap_metrics(pred[z], ref[z])["dice"]
                                        for z in lesion_slices])) if lesion_slices else float("nan"))
    voxel_ml = sp[0] * sp[1] * sp[2] / 1000.0
    row["lesion_ml_reference"] = float(ref.sum() * voxel_ml)
    row["lesion_ml_predicted"] = float(pred.sum() * voxel_ml)
    return row


def evaluate_cases(model, ds: PreprocessedDataset, case_ids, device, batch_size: int = 16,
                   threshold: float = 0.5, keep: int = 0, split: str = ""):
    """(rows, kept) — one metrics row per labelled case; ``kept`` holds the (image, reference,
    prediction) of the ``keep`` cases with the largest reference lesion, for overlays."""
    rows, arrays = [], {}
    for c in case_ids:
        image, infection, _ = ds.load(c)
        if infection is None:
            continue
        image, ref = np.asarray(image), np.asarray(infection).astype(bool)
        pred = predict_volume(model, image, device, batch_size) > threshold
        row = {"case_id": c, "split": split, "source": ds.cases[c].get("source", ""),
               **score_case(pred, ref, ds.cases[c])}
        rows.append(row)
        if keep:
            arrays[c] = (image, ref, pred)
            if len(arrays) > keep:  # keep only the largest lesions in memory
                smallest = min(arrays, key=lambda k: arrays[k][1].sum())
                del arrays[smallest]
    return rows, arrays


def summary_metrics(rows: list[dict], split: str) -> dict:
    out = summarise(rows, keys=tuple(f"volume_{k}" for k in VOLUME_KEYS) + ("slice_dice",),
                    prefix=f"{split}_")
    out[f"{split}_volumes"] = float(len(rows))
    return out


def log_evaluation(tracker, rows: list[dict], kept: dict, split: str, prefix: str | None = None) -> dict:
    """Metrics ``{prefix}_volume_*`` (prefix: the split's name unless given), the per-volume CSV
    and the figures of one split."""
    metrics = summary_metrics(rows, prefix or split)
    tracker.log_metrics(metrics)
    tracker.log_table(rows, f"tables/{split}_per_volume.csv")
    if rows:
        tracker.log_figure(figures.dice_per_volume(rows, split), f"figures/{split}_volume_dice.png")
    for case_id, (image, ref, pred) in kept.items():
        row = next(r for r in rows if r["case_id"] == case_id)
        tracker.log_figure(figures.overlay_slices(image, ref, pred, case_id, row),
                           f"figures/overlay_slices_{split}_{case_id}.png")
    return metrics
