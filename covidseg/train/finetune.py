"""``finetune``: transfer learning on the labelled COVID volumes of one fold (thesis 5.2).

init (scratch / a pretrain or finetune run / a Models Genesis file) → strategy (what trains, what
is re-initialised) → the one training loop on 2D slices → best model by validation volume Dice →
per-volume validation and test metrics, tables and overlays → the model as an MLflow pyfunc.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from covidseg.config import FinetuneConfig, TrainingConfig, threshold_value
from covidseg.data.augment import make_augment
from covidseg.data.splits import fold_split
from covidseg.data.store import PreprocessedDataset
from covidseg.datasets import open_dataset
from covidseg.errors import ConfigError
from covidseg.inference import is_3d
from covidseg.models.checkpoint import load_model
from covidseg.models.factory import ModelSpec, build_model, load_encoder_weights
from covidseg.models.genesis import (
    flatten_genesis_3d,
    is_genesis_state,
    read_checkpoint_state,
)
from covidseg.models.surgery import apply_strategy
from covidseg.tracking import Tag
from covidseg.train.distributed import from_main
from covidseg.train.evaluation import choose_threshold, evaluate_cases, log_evaluation
from covidseg.train.losses import SegmentationLoss
from covidseg.train.plan import Plan, is_slice_dataset, make_plan, planned
from covidseg.train.stage import Stage, model_extra
from covidseg.train.tasks import SegmentationTask, VolumeTask, default_workers

log = logging.getLogger("covidseg.finetune")


def dataset_classes(ds: PreprocessedDataset) -> int:
    """Output channels a network needs for ``ds``: 1 (binary lesion) or 3 (background,
    ground-glass, consolidation: ``preprocess -P labels=multiclass``)."""
    return 3 if ds.descriptor["config"].get("labels") == "multiclass" else 1


def with_classes(model, spec: ModelSpec, classes: int, report: dict) -> tuple:
    """A network with ``classes`` outputs: an initialisation with another number of outputs keeps
    every tensor whose shape fits (the head is new)."""
    if spec.classes == classes:
        return model, spec
    new_spec = ModelSpec(arch=spec.arch, encoder=spec.encoder, in_channels=spec.in_channels,
                         classes=classes)
    new = build_model(new_spec)
    own = new.state_dict()
    fits = {k: v for k, v in model.state_dict().items() if k in own and own[k].shape == v.shape}
    own.update(fits)
    new.load_state_dict(own)
    report["new_output_tensors"] = sorted(set(own) - set(fits))
    log.info("init has %d output(s), the data %d classes: %d tensors kept, %s new", spec.classes,
             classes, len(fits), ", ".join(report["new_output_tensors"]))
    return new, new_spec


def initial_model(cfg: TrainingConfig, init: str, classes: int = 1) -> tuple:
    """(model, spec, report, source run id) for ``init``: ``scratch``, a Models Genesis
    checkpoint file, a covidseg model folder, a run id or a model URI; ``classes`` outputs."""
    model, spec, report, run = _initial_model(cfg, init, classes)
    model, spec = with_classes(model, spec, classes, report)
    return model, spec, report, run


def _initial_model(cfg: TrainingConfig, init: str, classes: int) -> tuple:
    if init == "scratch":
        spec = ModelSpec(arch=cfg.arch, encoder=cfg.encoder, classes=classes)
        model = build_model(spec)
        report = {"init": "scratch", "encoder_weights": cfg.encoder_weights or None}
        if cfg.encoder_weights:  # what the file gave: used, missing, adapted to 1 channel
            report["encoder_weights_loaded"] = load_encoder_weights(model, cfg.encoder_weights)
        return model, spec, report, None
    path = Path(init).expanduser()
    if path.is_file():
        state = read_checkpoint_state(path)
        if not is_genesis_state(state):
            raise ConfigError(f"{path}: not a Models Genesis checkpoint; for a covidseg model give "
                              "its folder, run id or model URI")
        if cfg.arch not in ("unet", "genesis-unet"):
            raise ConfigError(f"init={path.name} is a Models Genesis checkpoint: it fits "
                              f"arch=genesis-unet, not arch={cfg.arch}")
        spec = ModelSpec(arch="genesis-unet", encoder="genesis")
        model = build_model(spec)
        report = flatten_genesis_3d(state, model)
        log.info("Models Genesis: %d tensors flattened into the 2D U-Net, %d skipped, %d missing",
                 len(report["consumed"]), len(report["skipped"]), len(report["missing"]))
        return model, spec, {"init": "models-genesis", "file": path.name, **report}, None
    from covidseg.tracking import download_model

    model_dir, source_run = download_model(init)
    model, config = load_model(model_dir, single=True)
    spec = ModelSpec(**config["model"])
    if (spec.arch, spec.encoder) != (cfg.arch, cfg.encoder):
        log.warning("init model is %s/%s: that architecture is used (arch=%s encoder=%s ignored)",
                    spec.arch, spec.encoder, cfg.arch, cfg.encoder)
    return model, spec, {"init": init, "arch": spec.arch, "encoder": spec.encoder,
                         "pretrained_as": config.get("task", "")}, source_run


def training_cases(ds: PreprocessedDataset, cfg: FinetuneConfig) -> tuple[list[str], list[str]]:
    train, val = fold_split(ds.splits, cfg.fold, cfg.regime)
    if cfg.train_cases:
        if cfg.train_cases > len(train):
            raise ConfigError(f"train_cases={cfg.train_cases} but fold {cfg.fold} ({cfg.regime}) "
                              "has "
                              f"{len(train)} training volumes")
        pick = np.random.default_rng(cfg.seed).permutation(len(train))[: cfg.train_cases]
        train = sorted(train[i] for i in pick)
    if not train or not val:
        raise ConfigError(f"fold {cfg.fold} ({cfg.regime}) has {len(train)} training and "
                          f"{len(val)} validation volumes; both must be non-empty")
    return train, val


def calibration_batches(slices, batch_size: int, limit: int = 256):
    """Up to ``limit`` training slices spread over the set, as training sees them (epoch 0's
    augmentation), in batches: the data a frozen norm layer's statistics are re-estimated on."""
    n = len(slices)
    idx = np.unique(np.linspace(0, n - 1, min(n, limit)).round().astype(int)) if n else []
    for start in range(0, len(idx), batch_size):
        yield torch.stack([slices[(0, int(i))][0] for i in idx[start:start + batch_size]])


def augmentation(cfg, ds: PreprocessedDataset):
    """The training augmentation ``augment`` names (``auto``: ``strong``; with ``recipe=thesis``
    the slice preset for a set of 2D slices, the thesis's CT preset for volumes); None for
    ``none``.  ``strong`` fills and augments as the data needs: a 2D slice set's background is its
    minimum, a CT volume's is 0 outside the lungs."""
    slices = is_slice_dataset(ds)
    name = cfg.augment
    if name == "auto":
        name = ("slice" if slices else "ct") if cfg.recipe == "thesis" else "strong"
    try:
        return make_augment(name, background="min" if slices else "zero")
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def segmentation_task(model, ds, train_ids, val_ids, cfg: FinetuneConfig, device,
                      plan: Plan | None = None, cls=SegmentationTask, **extra):
    classes = dataset_classes(ds)
    if classes > 1 and cfg.mixup:
        raise ConfigError("mixup mixes binary masks: it does not apply to labels=multiclass")
    if classes > 1 and is_3d(model):
        raise ConfigError("labels=multiclass trains 2D networks: arch=unet3d (the coarse 3D "
                          "U-Net) segments the lesion union only")
    loss = SegmentationLoss(cfg.loss, pos_weight=cfg.pos_weight or None, classes=classes,
                            dice=cfg.dice)
    iterations = (planned(plan, "iterations_per_epoch") if plan is not None
                  else cfg.iterations_per_epoch)
    common = {"seed": cfg.seed, "eval_batch": max(cfg.batch_size, 16),
              "threshold": threshold_value(cfg.threshold, "auto") or 0.5,
              "iterations": iterations}
    if is_3d(model):  # the coarse 3D U-Net (arch=unet3d): whole volumes at low resolution
        if extra:
            raise ConfigError("meanteacher trains 2D networks, not arch=unet3d")
        return VolumeTask(model, ds, train_ids, val_ids, loss, device, **common)
    return cls(model, ds, train_ids, val_ids, loss, device, batch_size=cfg.batch_size,
               workers=default_workers(cfg.workers), augment=augmentation(cfg, ds),
               crop=cfg.image_size, lesion_boost=cfg.lesion_boost, use_mixup=cfg.mixup,
               **common, **extra)


def finalise_segmentation(stage: Stage, model, spec: ModelSpec, result, train_ids, val_ids,
                          extra: dict) -> dict:
    """Best weights → decision threshold (``auto``: chosen on the validation cases) → training,
    validation and test evaluation → model folder → pyfunc."""
    ds, cfg, tracker, device = stage.ds, stage.cfg, stage.tracker, stage.device
    model.load_state_dict(result.best_state)
    summary = {"best_epoch": result.best_epoch, "best_val_volume_dice": round(result.best_score, 4)}
    batch = max(cfg.batch_size, 16)
    threshold = threshold_value(cfg.threshold, allowed="auto")
    if threshold is None:
        threshold, sweep = choose_threshold(model, ds, val_ids, device, batch, cfg.tta)
        tracker.log_table(sweep, "tables/threshold_sweep.csv")
        log.info("threshold=auto: %.2f (validation volume Dice %.4f; %.4f at 0.5)", threshold,
                 max(r["val_volume_dice_resampled"] for r in sweep),
                 next(r["val_volume_dice_resampled"] for r in sweep
                      if abs(r["threshold"] - 0.5) < 1e-9))
    tracker.log_metrics({"threshold": threshold})
    summary["threshold"] = threshold
    scores = {"threshold": threshold}  # the best model's final numbers, linked to the logged model
    for split, ids in (("train", train_ids), ("val", val_ids), ("test", ds.splits["test"])):
        if not ids:
            continue
        ev = evaluate_cases(model, ds, ids, device, batch, threshold=threshold,
                            keep=0 if split == "train" else cfg.overlays, split=split,
                            area=split != "train",  # the costly surface-area NSD: val and test
                            tta=cfg.tta)
        stage.evaluations[split] = ev
        # the per-epoch series is val_volume_dice: the best model's final scores are final_*
        prefix = "test" if split == "test" else f"final_{split}"
        metrics = log_evaluation(tracker, ev, split, prefix)
        scores.update({k: v for k, v in metrics.items()
                       if split != "train" and "_undefined" not in k})
        summary[f"{prefix}_volume_dice"] = round(metrics[f"{prefix}_volume_dice"], 4)
        if f"{prefix}_slice_dice_thravg" in metrics:
            key = f"{prefix}_slice_dice_thravg"
            summary[key] = round(metrics[key], 4)
    model_dir = stage.save_final_model(model, spec,
                                       {**extra, "threshold": threshold, "tta": bool(cfg.tta),
                                        "best_epoch": result.best_epoch,
                                        "best_val_volume_dice": result.best_score,
                                        "run_id": tracker.run_id})
    uri = tracker.log_model(model_dir, "model", getattr(cfg, "register_as", ""),
                            getattr(cfg, "alias", ""), metrics=scores)
    summary["model_uri"] = uri or str(model_dir)
    if uri:
        stage.finish()
    return summary


def finetune(cfg: FinetuneConfig, tracker=None, on_epoch_end=None, progress: bool = True) -> dict:
    """The ``finetune`` entry point (also the objective of ``tune``); ``cv=K``: K nested fold
    runs and their ensemble (:mod:`covidseg.train.crossval`)."""
    if cfg.cv:
        from covidseg.train.crossval import cross_validate

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
        return (ds, *training_cases(ds, cfg), *initial_model(cfg, cfg.init, dataset_classes(ds)))

    stage.ds, train_ids, val_ids, model, spec, init_report, init_run = from_main(resolve)
    tracker.link_source("init", init_run)
    stage.record_plan(make_plan(stage.ds, train_ids, cfg, three_d=is_3d(model)))
    task = segmentation_task(model, stage.ds, train_ids, val_ids, cfg, stage.device,
                             stage.plan)
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
