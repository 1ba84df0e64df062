"""``predict`` and ``evaluate``: a trained model applied to new CT, or scored on a labelled set.

The model folder carries the preprocessing settings it was trained with (``model.json``:
``preprocess``, the preprocess parameters as strings), so a new volume goes through exactly that
pipeline — never re-typed by the user.  What happens to an input is :mod:`covidseg.inference`'s
(the predictor, the pipelined reader/writer, the report with the MosMed severity class); here the
entry points open the model folder (decoding its stored parameters by their declaration in
:mod:`covidseg.config`), resolve ``model=`` and decide what MLflow receives.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import fields
from pathlib import Path

from covidseg.base.device import place_model, resolve_device
from covidseg.base.errors import ConfigError
from covidseg.config import (
    EvaluateConfig,
    PredictConfig,
    PreprocessConfig,
    parse_value,
    threshold_value,
    tta_value,
)
from covidseg.inference import predictor as inference
from covidseg.inference.inputs import list_inputs, lung_masks_for
from covidseg.inference.pipelined import FAILED_COLUMNS, OutputSettings, predict_inputs
from covidseg.inference.predictor import stored_threshold, trained_intensity_modes
from covidseg.models.checkpoint import load_model
from covidseg.stages.preprocess import preprocess_settings
from covidseg.stages.results import EvaluateResult, PredictResult
from covidseg.tracking import NullTracker, Tag

log = logging.getLogger("covidseg.predict")

def preprocess_config_of(model_config: dict) -> PreprocessConfig:
    """The PreprocessConfig a model was trained with (stored as strings in ``model.json``; a
    parameter it predates takes its default)."""
    stored = model_config.get("preprocess") or {}
    kwargs = {f.name: parse_value(f, stored[f.name]) for f in fields(PreprocessConfig)
              if f.name in stored}
    return PreprocessConfig(**kwargs)


class Predictor(inference.Predictor):
    """:class:`covidseg.inference.predictor.Predictor` as the entry points and the MLflow model
    open it: from a model folder, thresholds and ``tta`` as the parameters give them (text).

    Every logged model runs its own copy of the pyfunc file, and those copies import this class
    (``covidseg.stages.predict.Predictor``, or before the stages package ``covidseg.predict``) and
    call :meth:`from_dir`, :meth:`decision_threshold`, ``predict_file`` and ``predict_slices``."""

    @classmethod
    def from_dir(cls, directory, device: str = "auto", batch_size: int = 16,
                 tta: str = "model") -> Predictor:
        """The model in ``directory``; ``tta``: true, false, or model (what it stored)."""
        model, config = load_model(Path(directory))
        return cls(model, config, resolve_device(device),
                   preprocess_settings(preprocess_config_of(config)), batch_size,
                   tta_value(tta, config))

    def decision_threshold(self, requested=None) -> float:
        """``requested`` (a probability, or its text) or, for None / ``model``, the model's own."""
        value = threshold_value(requested, "model") if requested is not None else None
        return super().decision_threshold(value)


def check_inputs(cfg: PredictConfig) -> None:
    """``predict``'s check before its run exists: ``input=`` names something to predict."""
    list_inputs(cfg.input)


def predict_entry(cfg: PredictConfig, tracker=None) -> PredictResult:
    """The ``predict`` entry point: masks + reports for every input; failed inputs recorded."""
    from covidseg.tracking import download_model

    tracker = tracker or NullTracker()
    model_dir, source_run = download_model(cfg.model)
    tracker.link_source("model", source_run)
    predictor = Predictor.from_dir(model_dir, cfg.device, cfg.batch_size, cfg.tta)
    predictor.viewers = cfg.viewers
    tracker.log_params({"tta_used": str(predictor.tta).lower()})
    inputs = list_inputs(cfg.input)
    lungs = lung_masks_for(inputs, cfg.lungs, predictor.preprocess.lung_method)
    out = Path(cfg.output).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    outputs = OutputSettings(out, cfg.threshold, cfg.restrict_to_lungs, cfg.probabilities)
    reports, failed = predict_inputs(predictor, inputs, outputs, lungs, cfg.prefetch)
    for name, rows, columns in (("predictions.csv", reports, ["case_id"]),
                                ("failed.csv", failed, FAILED_COLUMNS)):
        with open(out / name, "w", newline="") as fh:  # a header alone when there is no row
            w = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else columns)
            w.writeheader()
            w.writerows(rows)
    tracker.log_artifacts(out, "predictions")
    tracker.log_metrics({"n_predicted": len(reports), "n_failed": len(failed)})
    if not reports:
        first = failed[0]["error"] if failed else "none"
        raise ConfigError(f"no input could be predicted ({first})")
    return PredictResult(output=str(out), predicted=len(reports), failed=len(failed),
                         severity=[r["severity"] for r in reports[:5]], run_id=tracker.run_id)


def preprocessing_differences(model_config: dict, ds) -> list[str]:
    """What the dataset ``ds`` was preprocessed with differently from the model's training data:
    the settings that change what the network sees, and intensity schemes it never saw."""
    trained_with = model_config.get("preprocess", {})
    differs = sorted(k for k in ("intensity", "lung_method", "image_size", "window_min",
                                 "window_max", "hist_eq", "slice_fit", "labels")
                     if k in trained_with and trained_with[k] != ds.descriptor["config"].get(k))
    modes = sorted({m.get("intensity", "") for m in ds.cases.values()})
    if set(modes) - set(trained_intensity_modes(model_config)):
        differs.append("intensity_modes")
    return differs


def evaluate_entry(cfg: EvaluateConfig, tracker=None) -> EvaluateResult:
    """The ``evaluate`` entry point: per-volume metrics of a model on a labelled set."""
    from covidseg.stages.datasets import open_dataset
    from covidseg.tracking import download_model
    from covidseg.train.evaluation import evaluate_cases, log_evaluation

    tracker = tracker or NullTracker()
    model_dir, source_run = download_model(cfg.model)
    tracker.link_source("model", source_run)
    ds = open_dataset(cfg.data, tracker, context="evaluation")
    model, config = load_model(model_dir)
    differs = preprocessing_differences(config, ds)
    if differs:
        log.warning("the dataset was preprocessed differently from the model's training data (%s)",
                    ", ".join(differs))
        tracker.set_tags({Tag.PREPROCESSING_DIFFERS: ",".join(differs)})
    ids = ds.splits.test if cfg.split == "test" else ds.ids(labelled=True)
    if not ids:
        raise ConfigError(f"data={cfg.data!r} has no {cfg.split} cases with masks")
    device = resolve_device(cfg.device)
    threshold = threshold_value(cfg.threshold, "model")
    threshold = stored_threshold(config) if threshold is None else threshold
    tracker.log_metrics({"threshold": threshold})
    tta = tta_value(cfg.tta, config)
    tracker.log_params({"tta_used": str(tta).lower()})
    ev = evaluate_cases(place_model(model, device), ds, ids, device, cfg.batch_size,
                        threshold=threshold, keep=3, split=cfg.split, tta=tta,
                        viewers=cfg.viewers)
    metrics = log_evaluation(tracker, ev, cfg.split)
    return EvaluateResult.of(metrics, run_id=tracker.run_id)
