"""``finetune``: transfer learning on the labelled COVID volumes of one fold (thesis 5.2).

init (scratch / a pretrain or finetune run / a Models Genesis file) → strategy (what trains, what
is re-initialised) → the one training loop on 2D slices → best model by validation volume Dice →
per-volume validation and test metrics, tables and overlays → the model as an MLflow pyfunc.
"""

from __future__ import annotations

import logging

from covidseg.config import FinetuneConfig, threshold_value
from covidseg.inference import is_3d
from covidseg.models.factory import ModelSpec
from covidseg.models.surgery import apply_strategy
from covidseg.stages.datasets import open_dataset
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
from covidseg.train.metric_keys import (
    SLICE_DICE_THRAVG,
    VAL_VOLUME_DICE,
    VOLUME_DICE,
    Moment,
    Split,
)
from covidseg.train.plan import make_plan
from covidseg.train.supervised import (
    calibration_batches,
    dataset_classes,
    initial_model,
    segmentation_task,
    split_cases,
)

log = logging.getLogger("covidseg.finetune")


def finalise_segmentation(stage: Stage, model, spec: ModelSpec, result, train_ids, val_ids,
                          extra: dict) -> dict:
    """Best weights → decision threshold (``auto``: chosen on the validation cases) → training,
    validation and test evaluation → model folder → pyfunc."""
    ds, cfg, tracker, device = stage.ds, stage.cfg, stage.tracker, stage.device
    model.load_state_dict(result.best_state)
    best_key = str(VAL_VOLUME_DICE.at(Moment.BEST))
    summary = {"best_epoch": result.best_epoch, best_key: round(result.best_score, 4)}
    batch = max(cfg.batch_size, 16)
    threshold = threshold_value(cfg.threshold, allowed="auto")
    if threshold is None:
        threshold, sweep = choose_threshold(model, ds, val_ids, device, batch, cfg.tta)
        tracker.log_table(sweep, "tables/threshold_sweep.csv")
        log.info("threshold=auto: %.2f (validation volume Dice %.4f; %.4f at 0.5)", threshold,
                 max(r[SWEEP_DICE] for r in sweep),
                 next(r[SWEEP_DICE] for r in sweep
                      if abs(r["threshold"] - 0.5) < 1e-9))
    tracker.log_metrics({"threshold": threshold})
    summary["threshold"] = threshold
    scores = {"threshold": threshold}  # the best model's final numbers, linked to the logged model
    for split, ids in ((Split.TRAIN, train_ids), (Split.VAL, val_ids),
                       (Split.TEST, ds.splits["test"])):
        if not ids:
            continue
        ev = evaluate_cases(model, ds, ids, device, batch, threshold=threshold,
                            keep=0 if split == "train" else cfg.overlays, split=split,
                            area=split != "train",  # the costly surface-area NSD: val and test
                            tta=cfg.tta, viewers=cfg.viewers if split == "test" else 0)
        stage.evaluations[split] = ev
        # the per-epoch series is val_volume_dice: the best model's final scores are final_*
        moment = Moment.EPOCH if split == Split.TEST else Moment.FINAL
        metrics = log_evaluation(tracker, ev, split, split, moment)
        scores.update({k: v for k, v in metrics.items()
                       if split != "train" and "_undefined" not in k})
        dice, thravg = (str(k.of(split, moment)) for k in (VOLUME_DICE, SLICE_DICE_THRAVG))
        summary[dice] = round(metrics[dice], 4)
        if thravg in metrics:
            summary[thravg] = round(metrics[thravg], 4)
    model_dir = stage.save_final_model(model, spec,
                                       {**extra, "threshold": threshold, "tta": bool(cfg.tta),
                                        "best_epoch": result.best_epoch,
                                        best_key: result.best_score,
                                        "run_id": tracker.run_id})
    uri = tracker.log_model(model_dir, "model", getattr(cfg, "register_as", ""),
                            getattr(cfg, "alias", ""), metrics=scores)
    summary["model_uri"] = uri or str(model_dir)
    if uri:
        stage.finish()
    return summary


def finetune(cfg: FinetuneConfig, tracker=None, on_epoch_end=None, progress: bool = True) -> dict:
    """The ``finetune`` entry point (also the objective of ``tune``); ``cv=K``: K nested fold
    runs and their ensemble (:mod:`covidseg.stages.crossval`)."""
    if cfg.cv:
        from covidseg.stages.crossval import cross_validate

        return cross_validate(cfg, finetune_fold, tracker, progress)
    return finetune_fold(cfg, tracker, on_epoch_end, progress).summary


def finetune_fold(cfg: FinetuneConfig, tracker=None, on_epoch_end=None,
                  progress: bool = True) -> Stage:
    """One finetune run on ``cfg.fold``; the stage it leaves holds the summary, the trained
    network (``stage.model``) and the final evaluations (None on ranks other than 0)."""
    stage = Stage.begin(cfg, tracker, on_epoch_end, progress)
    tracker = stage.tracker

    def resolve():  # under torchrun: rank 0 alone, the other ranks receive the result
        ds = open_dataset(cfg.data, tracker)
        return (ds, *split_cases(ds, cfg.fold, cfg.regime, cfg.train_cases, cfg.seed),
                *initial_model(cfg.init, cfg.arch, cfg.encoder, cfg.encoder_weights,
                               dataset_classes(ds)))

    stage.ds, train_ids, val_ids, model, spec, init_report, init_run = from_main(resolve)
    tracker.link_source("init", init_run)
    stage.record_plan(make_plan(stage.ds, train_ids, plan_request(cfg), three_d=is_3d(model)))
    task = segmentation_task(model, stage.ds, train_ids, val_ids, supervised_settings(cfg),
                             stage.device, stage.plan)
    strategy = apply_strategy(model, cfg.strategy,
                              calibration=lambda: calibration_batches(task.train_set,
                                                                      cfg.batch_size),
                              pretrained=cfg.init != "scratch")
    stage.record_network(spec, **({Tag.FROZEN: ", ".join(strategy["frozen"])}
                                  if strategy["frozen"] else {}))
    tracker.log_dict({"init": init_report, "strategy": strategy}, "init/report.json")
    stage.record_split(train_ids, val_ids, stage.ds.splits["test"],
                       trainable_parameters=strategy["trainable_parameters"],
                       **{k: strategy[k] for k in ("frozen_levels", "encoder_levels",
                                                   "frozen_encoder_fraction") if k in strategy})
    extra = model_extra(stage.ds, cfg, "segmentation", "finetune")
    result = stage.train(task, spec, extra)
    if not stage.is_main:
        return stage  # rank 0 evaluates and logs the model
    stage.model, stage.spec, stage.extra = model, spec, extra
    stage.summary = finalise_segmentation(stage, model, spec, result, train_ids, val_ids, extra)
    return stage
