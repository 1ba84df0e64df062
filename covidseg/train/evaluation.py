"""Scoring a network on labelled cases: one row per case, summaries, tables and figures.

**Where the metrics are computed.**  The network sees each case on its preprocessed grid (1 mm
in-plane, cropped; 2D slices resized).  Its probabilities are mapped back to the case's
*original* grid (un-crop and linear resampling back from 1 mm, or un-resizing a slice) and
thresholded there, and the metrics are computed against the reference mask as the dataset ships
it, with its own spacing — where published tables score.  Those are the unsuffixed names
(``volume_dice``, ``volume_nsd``, …); the same metrics on the preprocessed grid keep a
``_resampled`` suffix (the per-epoch ``val_volume_dice`` that picks the best epoch is computed
there too: it is cheaper and only compares epochs).

Volume-level metrics (3D, millimetres) are named ``volume_*``: Dice, IoU, HD95, the voxel NSD
(surface voxels within 3 mm), the surface-area NSD ``volume_nsd_area`` (the COVID-19-CT-Seg
benchmark's: DeepMind surface-distance / MONAI ``use_subvoxels``), sensitivity, precision.
``slice_dice`` is the mean 2D Dice over the slices whose reference contains lesion.  For 2D slice
sets the threshold-free Dice of the published 2D tables is added per split
(``slice_dice_thravg``, ``slice_dice_max``: Inf-Net's EvaluationTool convention, see
:func:`covidseg.train.metrics.threshold_free_dice`) with the sensitivity and specificity at the
decision threshold.  Multi-class networks (ground-glass / consolidation) are scored for the union
of the lesion classes (the unsuffixed names) and per class (``volume_dice_ground_glass``, …).
Predictions are thresholded at the model's decision threshold (0.5 unless it chose another) and
not restricted to the lung mask (the model's own output is scored).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from covidseg.data.geometry import to_canonical_grid
from covidseg.data.store import PreprocessedDataset
from covidseg.inference import output_classes, predict_volume
from covidseg.inference.viewer import slice_viewer_html
from covidseg.tracking import Tag
from covidseg.train import figures
from covidseg.train.calibration import Calibration
from covidseg.train.metric_keys import (
    RESAMPLED,
    VAL_VOLUME_DICE,
    VOLUME_DICE,
    Level,
    MetricKey,
    Moment,
    Split,
    keyed,
)
from covidseg.train.metrics import (
    overlap_metrics,
    sensitivity_specificity,
    summarise,
    surface_dice_area,
    threshold_dice_curve,
    volume_metrics,
)
from covidseg.train.tasks import calibration_region, labelled_predictions

log = logging.getLogger("covidseg.evaluation")

VOLUME_KEYS = ("dice", "iou", "hd95", "nsd", "nsd_area", "sensitivity", "precision")
CLASS_NAMES = ("ground_glass", "consolidation")  # labels 1 and 2 of a multi-class mask


def spacing_zyx(meta: dict) -> tuple[float, float, float]:
    """(z, y, x) spacing of a preprocessed case in mm; pixel units for 2D slice images."""
    sp = meta.get("spacing")
    return (1.0, 1.0, 1.0) if not sp else (float(sp[2]), float(sp[1]), float(sp[0]))


def original_spacing_zyx(meta: dict) -> tuple[float, float, float]:
    """(z, y, x) spacing of a case's original grid (a slice image's pixels count as 1 mm)."""
    sp = meta["canonical_geometry"]["spacing"]
    return float(sp[2]), float(sp[1]), float(sp[0])


def score_case(pred: np.ndarray, ref: np.ndarray, spacing: tuple, area: bool = True) -> dict:
    """Volume metrics (mm from ``spacing`` (z, y, x)), the lesion-slice mean 2D Dice, lesion ml;
    ``area``: also the surface-area NSD (the costliest metric)."""
    pred, ref = pred.astype(bool), ref.astype(bool)
    # a 2D slice (one-slice case) is scored in 2D: its surface is the lesion's outline
    p2, r2, sp2 = (pred[0], ref[0], spacing[1:]) if pred.shape[0] == 1 else (pred, ref, spacing)
    row = {str(MetricKey(k, Level.VOLUME)): v for k, v in volume_metrics(p2, r2, sp2).items()}
    if area:
        row[str(MetricKey("nsd_area", Level.VOLUME))] = surface_dice_area(p2, r2, sp2)
    lesion_slices = [z for z in range(ref.shape[0]) if ref[z].any()]
    slice_dice = [overlap_metrics(pred[z], ref[z])["dice"] for z in lesion_slices]
    row[str(MetricKey("dice", Level.SLICE))] = (float(np.mean(slice_dice)) if lesion_slices
                                                else float("nan"))
    voxel_ml = spacing[0] * spacing[1] * spacing[2] / 1000.0
    row["lesion_ml_reference"] = float(ref.sum() * voxel_ml)
    row["lesion_ml_predicted"] = float(pred.sum() * voxel_ml)
    return row


def _per_class(pred_union, cls_map, ref_labels, spacing, area: bool = True) -> dict:
    """Dice (and surface-area NSD) of each lesion class of a multi-class prediction."""
    out = {}
    for k, name in enumerate(CLASS_NAMES, start=1):
        p, r, sp = pred_union & (cls_map == k), ref_labels == k, spacing
        if p.shape[0] == 1:  # a 2D slice: scored in 2D
            p, r, sp = p[0], r[0], spacing[1:]
        out[str(MetricKey("dice", Level.VOLUME, variant=(name,)))] = overlap_metrics(p, r)["dice"]
        if area:
            out[str(MetricKey("nsd_area", Level.VOLUME, variant=(name,)))] = \
                surface_dice_area(p, r, sp)
    return out


def _lesion_class(p1: np.ndarray, p2: np.ndarray) -> np.ndarray:
    """The more probable lesion class of each voxel (1 ground-glass, 2 consolidation), uint8."""
    return np.where(p2 > p1, 2, 1).astype(np.uint8)


@dataclass
class Evaluation:
    """What :func:`evaluate_cases` found: per-case rows, the arrays kept for overlays, and for
    2D slice sets each slice's threshold-Dice curve and sensitivity/specificity (original grid;
    the preprocessed one, ``grid == "preprocessed"``, for datasets that kept no original)."""

    rows: list[dict] = field(default_factory=list)
    kept: dict = field(default_factory=dict)
    curves: list[np.ndarray] = field(default_factory=list)
    sens_spec: list[tuple[float, float]] = field(default_factory=list)
    threshold: float = 0.5
    grid: str = "original"
    calibration: Calibration = field(default_factory=Calibration)
    # of the kept cases (largest lesion first): how many are drawn as overlay figures (None: all)
    # and logged as HTML slice viewers
    overlays: int | None = None
    viewers: int = 0

    def add_slice(self, prob: np.ndarray, ref: np.ndarray) -> None:
        self.curves.append(threshold_dice_curve(prob, ref))
        self.sens_spec.append(sensitivity_specificity(prob > self.threshold, ref))


def evaluate_cases(model, ds: PreprocessedDataset, case_ids, device, batch_size: int = 16,
                   threshold: float = 0.5, keep: int = 0, split: str = "",
                   area: bool = True, tta: bool = False, viewers: int = 0) -> Evaluation:
    """Score ``model`` on the labelled ``case_ids`` (original grid, and the preprocessed grid as
    ``*_resampled``); ``keep`` cases with the largest reference lesion are kept for overlays,
    ``viewers`` for HTML slice viewers; ``area``: compute the surface-area NSD (original grid
    only); ``tta``: test-time mirroring."""
    ev = Evaluation(threshold=threshold, overlays=keep, viewers=viewers)
    keep = max(keep, viewers)
    multiclass = output_classes(model) > 1
    for c in case_ids:
        image, infection, _ = ds.load(c)
        if infection is None:
            continue
        meta = ds.cases[c]
        image, ref_labels = np.asarray(image), np.asarray(infection)
        ref = ref_labels > 0
        probs = predict_volume(model, image, device, batch_size, classes=multiclass, tta=tta)
        prob = 1.0 - probs[0] if multiclass else probs
        pred = prob > threshold
        ev.calibration.add(prob, ref, calibration_region(image, meta))
        row = {"case_id": c, "split": split, "source": meta.get("source", "")}
        resampled = score_case(pred, ref, spacing_zyx(meta), area=False)
        if multiclass:
            resampled.update(_per_class(pred, _lesion_class(probs[1], probs[2]), ref_labels,
                                        spacing_zyx(meta), area=False))
        original = ds.load_original(c) if "canonical_geometry" in meta else None
        one_slice = bool(meta.get("slice_image")) and image.shape[0] == 1
        if original is None:  # a dataset preprocessed before original grids were kept
            if ev.grid == "original":
                log.warning("case %s (and the others of this dataset) has no original-grid mask: "
                            "it was preprocessed before covidseg kept one; scored on the "
                            "preprocessed grid (re-run preprocess for original-grid metrics)", c)
            ev.grid = "preprocessed"
            row.update({"grid": "preprocessed", **resampled})
            if one_slice:
                ev.add_slice(prob[0], ref[0])
        else:
            prob_o = to_canonical_grid(prob, meta)
            pred_o, sp_o = prob_o > threshold, original_spacing_zyx(meta)
            row.update({"grid": "original", **score_case(pred_o, original > 0, sp_o, area)})
            if multiclass:
                cls_o = _lesion_class(to_canonical_grid(probs[1], meta),
                                      to_canonical_grid(probs[2], meta))
                row.update(_per_class(pred_o, cls_o, original, sp_o, area))
                del cls_o
            if one_slice:
                ev.add_slice(prob_o[0], original[0] > 0)
            del prob_o
        row.update({str(MetricKey.parse(k).with_suffix(RESAMPLED)): v
                    for k, v in resampled.items()})
        ev.rows.append(row)
        if keep:
            ev.kept[c] = (image, ref, pred)
            if len(ev.kept) > keep:  # keep only the largest lesions in memory
                smallest = min(ev.kept, key=lambda k: ev.kept[k][1].sum())
                del ev.kept[smallest]
    return ev


THRESHOLD_SWEEP = tuple(round(t, 2) for t in np.arange(0.05, 0.951, 0.05))
SWEEP_DICE = str(VAL_VOLUME_DICE.with_suffix(RESAMPLED))  # the sweep table's score column


def choose_threshold(model, ds: PreprocessedDataset, case_ids, device,
                     batch_size: int = 16, tta: bool = False) -> tuple[float, list[dict]]:
    """``threshold=auto``: the lesion-probability threshold (0.05 … 0.95) with the best mean
    volume Dice over the validation cases (preprocessed grid, as the per-epoch score; ties go to
    the threshold nearest 0.5); returns it and the sweep's table.  Each case's probabilities are
    reduced to per-threshold counts at once (no map is kept)."""
    thresholds = np.asarray(THRESHOLD_SWEEP)
    dices = []
    for prob, ref, _ in labelled_predictions(model, ds, case_ids, device, batch_size, tta):
        # voxels above each threshold, overall and inside the reference (sorted once)
        n_pred = prob.size - np.searchsorted(np.sort(prob, axis=None), thresholds, side="right")
        inside = np.sort(prob[ref])
        tp = inside.size - np.searchsorted(inside, thresholds, side="right")
        denom = n_pred + inside.size
        dices.append(np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), 1.0))
        del prob
    if not dices:
        return 0.5, [{"threshold": 0.5, SWEEP_DICE: float("nan")}]
    mean = np.mean(dices, axis=0)
    sweep = [{"threshold": float(t), SWEEP_DICE: float(d)} for t, d in zip(thresholds, mean)]
    best = max(sweep, key=lambda r: (r[SWEEP_DICE], -abs(r["threshold"] - 0.5)))
    return float(best["threshold"]), sweep


def summary_metrics(ev: Evaluation, split: Split | str,
                    moment: Moment | str = Moment.EPOCH) -> dict:
    """Means over cases (``{split}_volume_dice`` …, ``…_resampled``), and for 2D slice sets the
    threshold-free Dice and the sensitivity/specificity at the decision threshold; named for
    ``split`` at ``moment`` (:class:`~covidseg.train.metric_keys.MetricKey`)."""
    rows = ev.rows
    keys = [k for k in rows[0] if MetricKey.parse(k).level != Level.NONE] if rows else \
        [str(MetricKey(k, Level.VOLUME)) for k in VOLUME_KEYS]
    out = summarise(rows, keys=tuple(keys))
    out["volumes"] = float(len(rows))
    if ev.curves:
        # Inf-Net: the per-threshold Dice averaged over images, then over thresholds / its max
        curve = np.mean(ev.curves, axis=0)
        suffix = () if ev.grid == "original" else (RESAMPLED,)
        values = np.asarray(ev.sens_spec, dtype=float)  # per slice, then the mean over slices
        found = {"dice_thravg": float(curve.mean()), "dice_max": float(curve.max())}
        for j, name in enumerate(("sensitivity", "specificity")):
            v = values[:, j][np.isfinite(values[:, j])]
            found[name] = float(v.mean()) if v.size else float("nan")
        out.update({str(MetricKey(k, Level.SLICE, variant=suffix)): v for k, v in found.items()})
    return keyed(out, split, moment)


def log_evaluation(tracker, ev: Evaluation, split: str, key: Split | str | None = None,
                   moment: Moment | str = Moment.EPOCH) -> dict:
    """Metrics ``{key}_volume_*`` (key: the split's name unless given; ``moment`` ``final``:
    ``final_{key}_…``), the per-case CSV and the figures of one split."""
    named = key or split
    metrics = summary_metrics(ev, named, moment)
    calibration = ev.calibration.summary()
    metrics.update(keyed(calibration, named, moment))
    tracker.log_metrics(metrics)
    if ev.calibration.count.sum() and split != "train":
        tracker.log_table(ev.calibration.table(), f"tables/{split}_calibration.csv")
        tracker.figure(f"figures/{split}_reliability_pixels.png", figures.reliability_diagram,
                       ev.calibration.table(), split, calibration)
    if ev.grid != "original":
        tracker.set_tags({Tag.EVAL_GRID: ev.grid})
    tracker.log_table(ev.rows, f"tables/{split}_per_volume.csv")
    if ev.rows:  # the level is in the name: per 2D slice image or per 3D volume
        slices = bool(ev.curves) and len(ev.curves) == len(ev.rows)
        name = f"{split}_{MetricKey('dice_per_image', Level.SLICE) if slices else VOLUME_DICE}"
        tracker.figure(f"figures/{name}.png", figures.dice_per_volume, ev.rows, split, slices)
    largest = sorted(ev.kept, key=lambda c: -int(ev.kept[c][1].sum()))
    for case_id in largest[:ev.overlays]:
        row = next(r for r in ev.rows if r["case_id"] == case_id)
        tracker.figure(f"figures/overlay_slices_{split}_{case_id}.png", figures.overlay_slices,
                       *ev.kept[case_id], case_id, row)
    for case_id in largest[:ev.viewers]:
        row = next(r for r in ev.rows if r["case_id"] == case_id)
        tracker.log_text(case_viewer(ev.kept[case_id], row, split), f"viewers/{case_id}.html")
    return metrics


def case_viewer(kept: tuple, row: dict, split: str) -> str:
    """The HTML slice viewer of one kept case (:mod:`covidseg.inference.viewer`): the arrays the
    network saw (preprocessed grid), with the case's scores on the original grid as a caption."""
    image, ref, pred = kept
    grid = row.get("grid", "original")
    score = row.get(str(VOLUME_DICE), float("nan"))
    caption = (f"{split} case, shown on the network's (preprocessed) grid, where the Dice below "
               f"is computed; volume Dice on the {grid} grid {score:.3f}")
    return slice_viewer_html(image, pred, ref, title=str(row["case_id"]), caption=caption)
