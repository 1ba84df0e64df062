"""``finetune``: transfer learning on the labelled COVID volumes of one fold (thesis 5.2).

init (scratch / a pretrain or finetune run / a Models Genesis file) → strategy (what trains, what
is re-initialised) → the one training loop on 2D slices → best model by validation volume Dice →
per-volume validation and test metrics, tables and overlays → the model as an MLflow pyfunc.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from covidseg.config import FinetuneConfig, threshold_value
from covidseg.data.store import PreprocessedDataset
from covidseg.inference import is_3d
from covidseg.models.factory import ModelSpec
from covidseg.models.surgery import apply_strategy
from covidseg.stages.datasets import open_dataset
from covidseg.stages.results import CrossValResult, SplitScores, TrainedResult, rounded
from covidseg.stages.settings import model_extra, plan_request, supervised_settings
from covidseg.stages.stage import Stage
from covidseg.tracking import Tag
from covidseg.train.distributed import from_main
from covidseg.train.evaluation import (
    SWEEP_DICE,
    choose_threshold,
    evaluate_cases,
    log_evaluation,
)
from covidseg.train.metric_keys import VAL_VOLUME_DICE, Moment, Split
from covidseg.train.plan import make_plan
from covidseg.train.supervised import (
    InitialModel,
    calibration_batches,
    dataset_classes,
    initial_model,
    segmentation_task,
    split_cases,
)

log = logging.getLogger("covidseg.finetune")


@dataclass
class FoldInputs:
    """What rank 0 resolves for a finetune run (sent to the other ranks under torchrun): the
    dataset, the fold's cases and the starting network."""

    ds: PreprocessedDataset
    train_ids: list[str]
    val_ids: list[str]
    start: InitialModel


def decision_threshold(stage: Stage, model, val_ids, batch: int) -> float:
    """The configured threshold, or (``auto``) the one the validation cases choose."""
    cfg, tracker = stage.cfg, stage.tracker
    threshold = threshold_value(cfg.threshold, allowed="auto")
    if threshold is None:
        threshold, sweep = choose_threshold(model, stage.ds, val_ids, stage.device, batch, cfg.tta)
        tracker.log_table(sweep, "tables/threshold_sweep.csv")
        log.info("threshold=auto: %.2f (validation volume Dice %.4f; %.4f at 0.5)", threshold,
                 max(r[SWEEP_DICE] for r in sweep),
                 next(r[SWEEP_DICE] for r in sweep
                      if abs(r["threshold"] - 0.5) < 1e-9))
    tracker.log_metrics({"threshold": threshold})
    return threshold


def evaluate_splits(stage: Stage, model, threshold: float, batch: int,
                    splits: dict) -> tuple[list[SplitScores], dict]:
    """Each split's evaluation (``splits``: split → case ids; empty ones skipped), logged and
    kept in ``stage.evaluations``: the headline scores, and the numbers linked to the logged
    model (validation and test, no ``_undefined`` counts)."""
    cfg, tracker = stage.cfg, stage.tracker
    scores, linked = [], {"threshold": threshold}
    for split, ids in splits.items():
        if not ids:
            continue
        ev = evaluate_cases(model, stage.ds, ids, stage.device, batch, threshold=threshold,
                            keep=0 if split == Split.TRAIN else cfg.overlays, split=split,
                            area=split != Split.TRAIN,  # the costly surface-area NSD: val, test
                            tta=cfg.tta, viewers=cfg.viewers if split == Split.TEST else 0)
        stage.evaluations[split] = ev
        # the per-epoch series is val_volume_dice: the best model's final scores are final_*
        moment = Moment.EPOCH if split == Split.TEST else Moment.FINAL
        metrics = log_evaluation(tracker, ev, split, split, moment)
        linked.update({k: v for k, v in metrics.items()
                       if split != Split.TRAIN and "_undefined" not in k})
        scores.append(SplitScores.of(metrics, split, moment))
    return scores, linked


def finalise_segmentation(stage: Stage, model, spec: ModelSpec, result, train_ids, val_ids,
                          extra: dict) -> TrainedResult:
    """Best weights → decision threshold (``auto``: chosen on the validation cases) → training,
    validation and test evaluation → model folder → pyfunc."""
    cfg, tracker = stage.cfg, stage.tracker
    model.load_state_dict(result.best_state)
    batch = max(cfg.batch_size, 16)
    threshold = decision_threshold(stage, model, val_ids, batch)
    scores, linked = evaluate_splits(stage, model, threshold, batch, {
        Split.TRAIN: train_ids, Split.VAL: val_ids, Split.TEST: stage.ds.splits.test})
    model_dir = stage.save_final_model(model, spec,
                                       {**extra, "threshold": threshold, "tta": bool(cfg.tta),
                                        "best_epoch": result.best_epoch,
                                        str(VAL_VOLUME_DICE.at(Moment.BEST)): result.best_score,
                                        "run_id": tracker.run_id})
    uri = tracker.log_model(model_dir, "model", getattr(cfg, "register_as", ""),
                            getattr(cfg, "alias", ""), metrics=linked)
    if uri:
        stage.finish()
    return TrainedResult(best_epoch=result.best_epoch,
                         best_val_volume_dice=rounded(result.best_score), threshold=threshold,
                         scores=scores, model_uri=uri or str(model_dir), run_id=tracker.run_id)


def finetune(cfg: FinetuneConfig, tracker=None, on_epoch_end=None,
             progress: bool = True) -> TrainedResult | CrossValResult:
    """The ``finetune`` entry point (also the objective of ``tune``); ``cv=K``: K nested fold
    runs and their ensemble (:mod:`covidseg.stages.crossval`)."""
    if cfg.cv:
        from covidseg.stages.crossval import cross_validate

        return cross_validate(cfg, finetune_fold, tracker, progress)
    return finetune_fold(cfg, tracker, on_epoch_end, progress).result


def finetune_fold(cfg: FinetuneConfig, tracker=None, on_epoch_end=None,
                  progress: bool = True) -> Stage:
    """One finetune run on ``cfg.fold``; the stage it leaves holds the result, the trained
    network (``stage.model``) and the final evaluations (None on ranks other than 0)."""
    stage = Stage.begin(cfg, tracker, on_epoch_end, progress)
    tracker = stage.tracker

    def resolve() -> FoldInputs:  # under torchrun: rank 0 alone, the others receive it
        ds = open_dataset(cfg.data, tracker)
        return FoldInputs(ds, *split_cases(ds, cfg.fold, cfg.regime, cfg.train_cases, cfg.seed),
                          initial_model(cfg.init, cfg.arch, cfg.encoder, cfg.encoder_weights,
                                        dataset_classes(ds)))

    inputs = from_main(resolve)
    stage.ds, train_ids, val_ids = inputs.ds, inputs.train_ids, inputs.val_ids
    model, spec = inputs.start.model, inputs.start.spec
    tracker.link_source("init", inputs.start.run)
    stage.record_plan(make_plan(stage.ds, train_ids, plan_request(cfg), three_d=is_3d(model)))
    task = segmentation_task(model, stage.ds, train_ids, val_ids, supervised_settings(cfg),
                             stage.device, stage.plan)
    strategy = apply_strategy(model, cfg.strategy,
                              calibration=lambda: calibration_batches(task.train_set,
                                                                      cfg.batch_size),
                              pretrained=cfg.init != "scratch")
    stage.record_network(spec, **({Tag.FROZEN: ", ".join(strategy["frozen"])}
                                  if strategy["frozen"] else {}))
    tracker.log_dict({"init": inputs.start.report, "strategy": strategy}, "init/report.json")
    stage.record_split(train_ids, val_ids, stage.ds.splits.test,
                       trainable_parameters=strategy["trainable_parameters"],
                       **{k: strategy[k] for k in ("frozen_levels", "encoder_levels",
                                                   "frozen_encoder_fraction") if k in strategy})
    extra = model_extra(stage.ds, cfg, "segmentation", "finetune")
    result = stage.train(task, spec, extra)
    if not stage.is_main:
        return stage  # rank 0 evaluates and logs the model
    stage.model, stage.spec, stage.extra = model, spec, extra
    stage.result = finalise_segmentation(stage, model, spec, result, train_ids, val_ids, extra)
    return stage
