"""``finetune -P cv=K``: K-fold cross-validation whose K fold models all become the final model.

One parent run (the ``finetune`` run itself) and K nested runs, ``fold-0`` … ``fold-{K-1}``: run
k trains on the dataset's other K-1 folds and is validated on fold k, exactly as
``finetune -P fold=k`` (its own plan, curves, evaluation and logged model).  Then the parent logs

* the **out-of-fold** evaluation: every labelled training case scored once, by the model that
  did not train on it (``cv_volume_dice``, for 2D slice sets ``cv_slice_dice_thravg``, the
  per-case table ``tables/oof_per_volume.csv`` with each case's fold, its figures and
  calibration) and the per-fold table ``tables/cv_folds.csv``;
* the **ensemble** (:class:`covidseg.models.ensemble.EnsembleNet`: the mean of the K fold models'
  probabilities; every labelled case trained it) as the run's model — ``predict``, ``evaluate``
  and the pyfunc use it like any model — scored on the held-out test set when there is one.

With the default ``keep=last`` no fold's validation cases choose anything of their model (the
schedule ends where it ends), so the out-of-fold Dice is an honest estimate; with ``keep=best`` it
is optimistic (each fold's best epoch was picked on the cases it is scored on), and the run says so
(tag ``covidseg.stop_reason`` of each fold, and a warning).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from dataclasses import replace

import numpy as np

from covidseg.base.device import place_model
from covidseg.base.errors import ConfigError
from covidseg.config import FinetuneConfig, threshold_value
from covidseg.models.checkpoint import save_model
from covidseg.models.ensemble import EnsembleNet
from covidseg.stages.datasets import open_dataset
from covidseg.stages.results import CrossValResult, SplitScores
from covidseg.stages.stage import Stage, workdir_for
from covidseg.tracking import NullTracker, Tag
from covidseg.train.distributed import world
from covidseg.train.evaluation import Evaluation, evaluate_cases, log_evaluation
from covidseg.train.metric_keys import (
    SLICE_DICE_THRAVG,
    VAL_VOLUME_DICE,
    VOLUME_DICE,
    Moment,
    Split,
)

log = logging.getLogger("covidseg.crossval")


def fold_run(parent, fold: int, cfg: FinetuneConfig):
    """The nested run of one fold (a null tracker when the parent does not track)."""
    if not parent.enabled:
        return contextlib.nullcontext(NullTracker())
    from covidseg.tracking import child_run

    return child_run(parent, f"fold-{fold}", "finetune", cfg.to_params(),
                     tags={Tag.CV_FOLD: str(fold)})


def merge_evaluations(evaluations: list[Evaluation], keep: int = 0) -> Evaluation:
    """One evaluation of the cases of several (each case scored by its own fold's model), with
    each row's ``fold``; ``keep``: overlay cases kept (the first ones)."""
    out = Evaluation(threshold=evaluations[0].threshold)
    for fold, ev in enumerate(evaluations):
        out.rows += [{**r, "fold": fold} for r in ev.rows]
        out.curves += ev.curves
        out.sens_spec += ev.sens_spec
        if ev.grid != "original":
            out.grid = ev.grid
        out.calibration.merge(ev.calibration)
        for case_id, kept in ev.kept.items():
            if len(out.kept) < keep:
                out.kept[case_id] = kept
    return out


def cross_validate(cfg: FinetuneConfig, train_fold, tracker=None,
                   progress: bool = True) -> CrossValResult:
    """The ``finetune`` entry point with ``cv=K`` (see the module docstring); ``train_fold``
    (config, tracker, progress=…) → the :class:`Stage` of one finished fold run
    (:func:`covidseg.stages.finetune.finetune_fold`)."""
    tracker = tracker or NullTracker()
    if world().active:
        raise ConfigError("cv= trains its folds one after another in one process: under "
                          "torchrun give fold= (one run per fold)")
    if cfg.regime not in ("standard", "40-10"):
        raise ConfigError(f"cv= trains each fold on the others (regime=standard), not "
                          f"regime={cfg.regime}")
    if cfg.arch == "unet3d":
        raise ConfigError("cv= averages 2D networks: the coarse 3D U-Net (arch=unet3d) trains "
                          "one fold at a time (fold=)")
    if cfg.resume:
        raise ConfigError("cv= cannot resume: resume the fold run that was killed "
                          "(resume=<its run id>) and run the ensemble again")
    ds = open_dataset(cfg.data, tracker)
    n_folds = len(ds.splits.folds)
    if cfg.cv != n_folds:
        raise ConfigError(f"cv={cfg.cv} but the dataset was preprocessed with {n_folds} folds "
                          f"(preprocess with folds={cfg.cv}, or give cv={n_folds})")
    if cfg.keep == "best":
        log.warning("cv with keep=best: each fold keeps the epoch its validation fold scored "
                    "best, so the out-of-fold Dice is optimistic")
    stages, runs = [], []
    for k in range(n_folds):
        fold_cfg = replace(cfg, fold=k, cv=0, register_as="", alias="")
        with fold_run(tracker, k, fold_cfg) as child:
            log.info("cv: fold %d of %d", k + 1, n_folds)
            stages.append(train_fold(fold_cfg, child, progress=progress))
            runs.append(child.run_id or f"fold-{k}")
    return _ensemble(cfg, tracker, ds, stages, runs)


def _fold_table(tracker, stages: list[Stage], runs: list[str]) -> list[float]:
    """``tables/cv_folds.csv`` (each fold's run, validation cases and scores) and the spread of
    the folds' validation volume Dice; returns those Dice values."""
    val, final_thravg = str(VAL_VOLUME_DICE), str(SLICE_DICE_THRAVG.of(Split.VAL, Moment.FINAL))
    folds = []
    for k, (stage, run) in enumerate(zip(stages, runs)):
        ev, result = stage.evaluations[Split.VAL], stage.result
        dice = [r[str(VOLUME_DICE)] for r in ev.rows]
        val_scores = next(s for s in result.scores if s.split == Split.VAL)
        row = {"fold": k, "run_id": run, "val_cases": len(ev.rows),
               val: float(np.mean(dice)) if dice else float("nan"),
               "best_epoch": result.best_epoch, "threshold": result.threshold}
        if val_scores.slice_dice_thravg is not None:
            row[final_thravg] = val_scores.slice_dice_thravg
        folds.append(row)
    tracker.log_table(folds, "tables/cv_folds.csv")
    fold_dice = [f[val] for f in folds]
    spread = VOLUME_DICE.of(Split.CV).with_suffix("fold_std")  # cv_volume_dice_fold_std
    tracker.log_metrics({"cv_folds": float(len(folds)), str(spread): float(np.nanstd(fold_dice))})
    return fold_dice


def _ensemble(cfg: FinetuneConfig, tracker, ds, stages: list[Stage],
              runs: list[str]) -> CrossValResult:
    """Out-of-fold evaluation, the per-fold table, and the ensemble as the parent run's model."""
    device = stages[0].device
    oof = merge_evaluations([s.evaluations[Split.VAL] for s in stages], cfg.overlays)
    oof_metrics = log_evaluation(tracker, oof, "oof", Split.CV)
    fold_dice = _fold_table(tracker, stages, runs)
    tracker.set_tags({Tag.ENSEMBLE_OF: ",".join(runs)})
    threshold = threshold_value(cfg.threshold, "auto")
    if threshold is None:  # auto: each fold chose one on its validation fold
        threshold = float(np.mean([s.result.threshold for s in stages]))
    spec = replace(stages[0].spec, members=len(stages))
    ensemble = place_model(EnsembleNet([s.model for s in stages]), device)
    tracker.log_metrics({"threshold": threshold})
    scores = {"threshold": threshold, **{k: v for k, v in oof_metrics.items()
                                         if "_undefined" not in k}}
    test = None
    if ds.splits.test:
        ev = evaluate_cases(ensemble, ds, ds.splits.test, device, max(cfg.batch_size, 16),
                            threshold=threshold, keep=cfg.overlays, split="test", tta=cfg.tta)
        test_metrics = log_evaluation(tracker, ev, "test")
        scores.update({k: v for k, v in test_metrics.items() if "_undefined" not in k})
        test = SplitScores.of(test_metrics, Split.TEST)
    workdir = workdir_for(tracker.run_id)
    model_dir = save_model(workdir / "model", ensemble, spec,
                           {**stages[0].extra, "threshold": threshold, "tta": bool(cfg.tta),
                            "ensemble_of": runs, "run_id": tracker.run_id,
                            "training": cfg.to_params()})
    uri = tracker.log_model(model_dir, "model", cfg.register_as, cfg.alias, metrics=scores)
    if uri:
        shutil.rmtree(workdir, ignore_errors=True)
    result = CrossValResult(folds=len(stages), out_of_fold=SplitScores.of(oof_metrics, Split.CV),
                            fold_dice=fold_dice, test=test, model_uri=uri or str(model_dir),
                            run_id=tracker.run_id)
    log.info("cv: out-of-fold volume Dice %.4f (folds %s); ensemble of %d logged",
             result.out_of_fold.volume_dice, result.summary()["cv_volume_dice_per_fold"],
             len(stages))
    return result
