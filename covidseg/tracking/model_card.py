"""The model card: a short Markdown description of a logged model — its data and the data's
fingerprint, the training plan, its scores on validation and test with the metric conventions,
what it is for and where it stops — built from plain values the run already holds.

MLflow shows it on the registered model version's page (its description) and on the logged
model's page (the ``mlflow.note.content`` tag, the UI's "Description"); the run keeps it as
``model_card.md``.  :func:`model_card` is a pure function: the caller
(:meth:`covidseg.tracking.mlflow_tracker.MlflowTracker.log_model`) gathers the values.
"""

from __future__ import annotations

import math

# the card travels as a tag value and a model version description: kept short
CARD_LIMIT = 5000

# (column title, metric suffix) of the scores table, in this order; a column no split has is left
# out
SCORE_COLUMNS = (("volume Dice", "volume_dice"), ("NSD area (3 mm)", "volume_nsd_area"),
                 ("NSD voxels (3 mm)", "volume_nsd"), ("HD95 (mm)", "volume_hd95"),
                 ("sensitivity", "volume_sensitivity"), ("precision", "volume_precision"),
                 ("slice Dice thravg", "slice_dice_thravg"))

CONVENTIONS = (
    "Scores are per case on each case's original grid and spacing, then the mean over cases. "
    "Both masks empty: Dice 1, NSD 1; one empty: Dice 0, NSD 0, HD95 undefined (left out of its "
    "mean). NSD: the fraction of surface within 3 mm (area: the benchmark's surface-area NSD; "
    "voxels: surface voxels). Slice Dice thravg (2D slice sets): Inf-Net's threshold-free Dice, "
    "the mean over 256 thresholds of the min-max-normalised map. Validation cases chose the "
    "training length and the threshold, so their scores are optimistic; test cases were held out.")

INTENDED_USE = (
    "Research on label-efficient segmentation of COVID-19 lesions (ground-glass opacity, "
    "consolidation) in chest CT: the masks, lesion volume and involvement of the lungs for "
    "studies and for comparing training methods. Not a medical device: not for diagnosis, triage "
    "or treatment decisions.")


def _number(value, digits: int = 4) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if math.isnan(v) else f"{v:.{digits}f}"


def _count(value) -> str | None:
    try:
        return str(int(float(value)))
    except (TypeError, ValueError):
        return None


def _validation_prefix(metrics: dict) -> tuple[str, str] | None:
    """The metric prefix of the validation scores and its row title: ``final_val`` (one run's
    held-out fold) or ``cv`` (out-of-fold predictions of a cross-validation)."""
    if "final_val_volume_dice" in metrics:
        return "final_val", "validation"
    if "cv_volume_dice" in metrics:
        folds = _count(metrics.get("cv_folds"))
        return "cv", f"validation (out-of-fold{f', {folds} folds' if folds else ''})"
    return None


def scores_table(metrics: dict) -> list[str]:
    """The Markdown table of validation and test scores (no lines when there are none)."""
    rows = []
    val = _validation_prefix(metrics)
    if val:
        rows.append((val[1], val[0]))
    if "test_volume_dice" in metrics:
        n = _count(metrics.get("test_volumes"))
        rows.append((f"test ({n} cases)" if n else "test", "test"))
    columns = [(title, suffix) for title, suffix in SCORE_COLUMNS
               if any(f"{prefix}_{suffix}" in metrics for _, prefix in rows)]
    if not rows:
        return []
    lines = ["| split | " + " | ".join(t for t, _ in columns) + " |",
             "| --- |" + " --- |" * len(columns)]
    for title, prefix in rows:
        digits = [_number(metrics.get(f"{prefix}_{suffix}"), 2 if "hd95" in suffix else 4)
                  for _, suffix in columns]
        lines.append(f"| {title} | " + " | ".join(digits) + " |")
    return lines


def _data_lines(model: dict, metrics: dict, dataset: dict, fingerprint: dict) -> list[str]:
    pre = model.get("preprocess") or {}
    key = dataset.get("digest") or model.get("dataset_key") or "unknown"
    source = f" (preprocess run `{dataset['source_run']}`)" if dataset.get("source_run") else ""
    named = dataset.get("name") or (pre.get("dataset") if pre.get("dataset") != "auto" else "")
    lines = [f"- Dataset: `{named or 'unknown'}`{source}; "
             f"fingerprint (content key) `{key}`"]
    counts = [f"{n} {what}" for what, n in (("training", _count(metrics.get("train_volumes"))),
                                            ("validation", _count(metrics.get("val_volumes"))),
                                            ("test", _count(metrics.get("test_volumes"))))
              if n is not None]
    if counts:
        lines.append("- Cases: " + ", ".join(counts))
    fp = []
    if "fp_n_labelled" in fingerprint:
        fp.append(f"{_count(fingerprint['fp_n_labelled'])} labelled and "
                  f"{_count(fingerprint.get('fp_n_unlabelled')) or 0} unlabelled cases, "
                  f"{_count(fingerprint.get('fp_n_slices')) or '?'} slices")
    for label, key_, unit in (("in-plane spacing", "fp_spacing_xy_median", " mm"),
                              ("slice thickness", "fp_thickness_median", " mm"),
                              ("lesion fraction of the lungs", "fp_lesion_fraction_mean", "")):
        if key_ in fingerprint:
            stat = "mean" if key_.endswith("_mean") else "median"
            fp.append(f"{label} ({stat}) {_number(fingerprint[key_], 3)}{unit}")
    if fp:
        lines.append("- Fingerprint: " + "; ".join(fp))
    prep = [f"{k} {', '.join(v) if isinstance(v, list) else v}" for k, v in (
        ("intensity", model.get("intensity_modes") or pre.get("intensity")),
        ("lung extraction", model.get("lung_methods") or pre.get("lung_method")),
        ("image size", pre.get("image_size"))) if v not in (None, "", [], 0, "0")]
    if pre.get("window_min") not in (None, "") and pre.get("window_max") not in (None, ""):
        prep.append(f"window [{pre['window_min']}, {pre['window_max']}] HU")
    if prep:
        lines.append("- Preprocessing: " + "; ".join(prep))
    return lines


def _plan_lines(model: dict, plan: dict) -> list[str]:
    training = model.get("training") or {}
    lines = []
    if plan.get("total_iterations"):
        per = plan.get("iterations_per_epoch")
        lines.append(f"- Plan ({plan.get('kind') or 'as the data decided'}): "
                     f"{plan.get('epochs', '?')} epochs of "
                     f"{per if per not in (None, '', '0', 0) else 'one pass of'} iterations, "
                     f"{plan['total_iterations']} optimiser steps in all")
    settings = [f"{k} {training[k]}" for k in ("init", "strategy", "loss", "batch_size", "lr",
                                               "optimizer", "seed")
                if training.get(k) not in (None, "")]
    if settings:
        lines.append("- Training: " + ", ".join(settings))
    if model.get("ensemble_of"):
        lines.append(f"- An ensemble of {len(model['ensemble_of'])} fold models (mean "
                     "probability)")
    return lines


def _limits(model: dict, metrics: dict, dataset: dict) -> list[str]:
    name = (dataset.get("name") or (model.get("preprocess") or {}).get("dataset") or "").lower()
    n_train = _count(metrics.get("train_volumes"))
    lines = [f"- Learnt from {n_train + ' labelled cases' if n_train else 'few labelled cases'} "
             "of one dataset: scanners, protocols, patients and diseases it did not contain "
             "(children, other pneumonias, post-operative lungs) are untested.",
             "- Lesions outside the extracted lungs are removed (`restrict_to_lungs`): a lung "
             "extraction that misses diseased lung misses its lesion.",
             "- Inputs whose intensity scheme or lung extraction differs from the training cases' "
             "(above) give a warning and may score lower."]
    if name.startswith("demo"):
        lines.insert(0, "- Trained on synthetic demo phantoms: its scores say nothing about "
                        "real CT.")
    return lines


def model_card(model: dict, metrics: dict, *, name: str = "", run_id: str = "",
               dataset: dict | None = None, fingerprint: dict | None = None,
               plan: dict | None = None) -> str:
    """The Markdown model card.

    ``model``: the model's ``model.json`` (architecture, preprocessing, training parameters,
    threshold); ``metrics``: the run's metrics and the model's scores (``final_val_*`` or
    ``cv_*``, ``test_*``, ``train_volumes``…); ``name``: its registered name; ``dataset``:
    ``name``, ``digest`` (the content key) and ``source_run`` of its training data;
    ``fingerprint``: the preprocess run's ``fp_*`` metrics; ``plan``: ``kind``, ``epochs``,
    ``iterations_per_epoch``, ``total_iterations``.  Missing values are left out.
    """
    dataset, fingerprint, plan = dataset or {}, fingerprint or {}, plan or {}
    spec = model.get("model") or {}
    title = name or "covidseg model"
    network = f"{spec.get('arch', '?')} / {spec.get('encoder', '?')}"
    if int(spec.get("members", 1) or 1) > 1:
        network += f" × {spec['members']}"
    lines = [f"# {title}: COVID-19 lesion segmentation ({network})", ""]
    made = f"Trained by covidseg `{model.get('entry_point') or 'finetune'}`"
    if run_id:
        made += f" in run `{run_id}`"
    threshold = metrics.get("threshold", model.get("threshold"))
    lines += [f"{made}; decision threshold {_number(threshold, 2)}.", "", "## Data", ""]
    lines += _data_lines(model, metrics, dataset, fingerprint)
    plan_lines = _plan_lines(model, plan)
    if plan_lines:
        lines += ["", "## Plan", "", *plan_lines]
    lines += ["", "## Metrics", ""]
    table = scores_table(metrics)
    lines += [*table, "", CONVENTIONS] if table else ["No validation or test scores recorded."]
    lines += ["", "## Intended use", "", INTENDED_USE, "", "## Known limits", ""]
    lines += _limits(model, metrics, dataset)
    text = "\n".join(lines) + "\n"
    return text if len(text) <= CARD_LIMIT else text[:CARD_LIMIT - 2] + "…\n"
