"""What a stage hands the layers below it: small settings objects built from its entry point's
configuration (the configs stop at the stages layer), what ``model.json`` records of a run, and the
configuration of a killed run to resume."""

from __future__ import annotations

from dataclasses import fields

from covidseg.base.errors import ConfigError
from covidseg.config import (
    CONFIGS,
    SupervisedConfig,
    TrainingConfig,
    field_default,
    parse_value,
    threshold_value,
)
from covidseg.tracking import Tag
from covidseg.train.loop import LoopSettings
from covidseg.train.plan import PlanRequest, planned
from covidseg.train.supervised import SupervisedSettings


def model_extra(ds, cfg, task: str, entry_point: str) -> dict:
    """What ``model.json`` records besides the architecture: preprocessing and training."""
    return {"task": task, "entry_point": entry_point, "preprocess": ds.descriptor["config"],
            "dataset_key": ds.key, "training": cfg.to_params(),
            # the lung extraction each training case really got (auto picks per machine/case)
            "lung_methods": sorted({m.get("lung_method", "") for m in ds.cases.values()}),
            # and the intensity scheme (auto picks per case: hu, display or image)
            "intensity_modes": sorted({m.get("intensity", "") for m in ds.cases.values()}),
            "threshold": threshold_value(getattr(cfg, "threshold", 0.5), "auto") or 0.5}


def loop_settings(cfg: TrainingConfig, progress: bool = True, plan=None,
                  **stage_settings) -> LoopSettings:
    """The loop's settings from ``cfg``; the number of epochs from ``plan`` when there is one
    (the parameter given, else what the dataset decided); ``stage_settings``: what the stage
    itself decides (the mean teacher: ``score_start``, ``stop_after``)."""
    epochs = planned(plan, "epochs") if plan is not None else cfg.epochs
    return LoopSettings(epochs=epochs, patience=cfg.patience, lr=cfg.lr, lr_step=cfg.lr_step,
                        lr_gamma=cfg.lr_gamma, optimizer=cfg.optimizer,
                        weight_decay=cfg.weight_decay, schedule=cfg.schedule, warmup=cfg.warmup,
                        grad_clip=cfg.grad_clip, keep=cfg.keep,
                        checkpoint_every=cfg.checkpoint_every, amp=cfg.amp, progress=progress,
                        sync_bn=cfg.sync_bn, **stage_settings)


def supervised_settings(cfg: SupervisedConfig) -> SupervisedSettings:
    """The segmentation task's settings from a finetune or meanteacher ``cfg`` (its recipe
    applied; the threshold ``auto`` validates at 0.5 until it is chosen)."""
    return SupervisedSettings(loss=cfg.loss, dice=cfg.dice, pos_weight=cfg.pos_weight,
                              mixup=cfg.mixup, augment=cfg.augment, recipe=cfg.recipe,
                              batch_size=cfg.batch_size, workers=cfg.workers,
                              image_size=cfg.image_size, lesion_boost=cfg.lesion_boost,
                              seed=cfg.seed,
                              threshold=threshold_value(cfg.threshold, "auto") or 0.5,
                              iterations_per_epoch=cfg.iterations_per_epoch)


def plan_request(cfg: SupervisedConfig) -> PlanRequest:
    """What a finetune or meanteacher ``cfg`` asks of the dataset's plan."""
    return PlanRequest(batch_size=cfg.batch_size, recipe=cfg.recipe, epochs=cfg.epochs,
                       iterations_per_epoch=cfg.iterations_per_epoch)


def config_of_run(name: str, run_id: str, world_size: int = 1):
    """The configuration a killed ``name`` run was started with (to resume it exactly),
    ``resume`` set; it must be resumed by as many training processes (``world_size``) as it was
    started with."""
    from covidseg.tracking import resolve_run_ref, run_info

    run_id, _ = resolve_run_ref(run_id)
    run = run_info(run_id)
    entry = run.data.tags.get(Tag.ENTRY_POINT)
    if entry != name:
        raise ConfigError(f"resume={run_id} is a {entry or 'non-covidseg'} run, not a {name} run")
    if run.info.status == "FINISHED":
        raise ConfigError(f"resume={run_id}: the run has FINISHED; nothing to resume")
    cls = CONFIGS[name]
    params = run.data.params
    started = int(params.get("world_size", "1"))
    if started != world_size:
        raise ConfigError(f"resume={run_id} was trained by {started} process(es): resume it with "
                          f"as many (torchrun --nproc_per_node…), not {world_size}")
    kwargs = {f.name: parse_value(f, params[f.name].strip("'")) if f.name in params
              else field_default(f) for f in fields(cls)}
    if "recipe" in kwargs and "recipe" not in params:
        # started before recipes (and the iteration-counted loop): it trained with the thesis's
        # settings, one pass an epoch — continue it with them
        kwargs["recipe"] = "thesis"
    kwargs["resume"] = run_id
    cfg = cls(**kwargs)
    cfg.validate()
    return cfg
