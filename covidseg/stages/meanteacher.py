"""``meanteacher``: the fine-tuned model A' as student, an EMA copy as teacher (thesis 5.3.5),
learning from unlabelled slices by the mean teacher's consistency or UniMatch's confident
weak-to-strong targets (``method``).

This module is the stage (its data, starting model, split check, plan, run and results); the
methods — the losses, the EMA update, the views — are :mod:`covidseg.semi.teacher`.  The stage
keeps the fine-tuned run's split (one line when the parameters differ), scores the starting model
before the first step (kept if no epoch beats it), plans its steps over the unlabelled slices as
well (:data:`covidseg.train.plan.UNLABELLED_PASSES`), and does not stop early during the ramp-up."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from covidseg.base.errors import ConfigError
from covidseg.config import MeanteacherConfig
from covidseg.data.slices import SliceDataset
from covidseg.data.store import PreprocessedDataset
from covidseg.models.checkpoint import load_model
from covidseg.models.factory import ModelSpec
from covidseg.semi.pseudoset import PseudoSet, load_pseudo_set
from covidseg.semi.teacher import METHODS
from covidseg.stages.datasets import open_dataset
from covidseg.stages.finetune import finalise_segmentation
from covidseg.stages.results import TrainedResult
from covidseg.stages.settings import model_extra, plan_request, supervised_settings
from covidseg.stages.stage import Stage
from covidseg.tracking import NullTracker, Tag, download_model
from covidseg.train.distributed import from_main
from covidseg.train.plan import make_plan, planned
from covidseg.train.supervised import (
    augmentation,
    check_same_split,
    dataset_classes,
    segmentation_task,
    split_cases,
)


def unlabelled_slices(cfg: MeanteacherConfig, ds, pseudo: PseudoSet | None) -> SliceDataset | None:
    """Every slice of the unlabelled volumes (augmented like the training slices, no mask)."""
    ref = cfg.unlabelled or (pseudo.unlabelled_data if pseudo is not None else "")
    uds = open_dataset(ref, NullTracker()) if ref else ds
    ids = uds.splits.unlabelled if uds is ds else uds.ids()
    if not ids:
        return None
    oracle = all(uds.meta(c).has_truth for c in ids)  # phantoms: scored, never trained on
    return SliceDataset(uds, ids, augment=augmentation(ds, cfg.augment, cfg.recipe),
                        seed=cfg.seed + 7919, require_mask=False, crop=cfg.image_size,
                        oracle=oracle)


@dataclass
class TeacherInputs:
    """What rank 0 resolves for a meanteacher run (sent to the other ranks under torchrun): the
    dataset, the fine-tuned network with its ``model.json`` and run, the pseudo-labelled set
    with its run (None without ``pseudo=``) and the unlabelled slices (None: there are none)."""

    ds: PreprocessedDataset
    model: nn.Module
    config: dict
    model_run: str | None
    pseudo: PseudoSet | None
    pseudo_run: str | None
    unlabelled: SliceDataset | None


def resolve_inputs(cfg: MeanteacherConfig, tracker) -> TeacherInputs:
    ds = open_dataset(cfg.data, tracker)
    if dataset_classes(ds) > 1:
        raise ConfigError("meanteacher learns binary lesion masks: labels=multiclass data "
                          "trains with finetune")
    model_dir, model_run = download_model(cfg.model)
    pseudo, pseudo_run = load_pseudo_set(cfg.pseudo) if cfg.pseudo else (None, None)
    model, config = load_model(model_dir, single=True)
    return TeacherInputs(ds, model, config, model_run, pseudo, pseudo_run,
                         unlabelled_slices(cfg, ds, pseudo))


def _split(cfg: MeanteacherConfig, inputs: TeacherInputs) -> tuple[list[str], list[str]]:
    """The fine-tuned run's fold (checked: a binary network, something unlabelled to learn
    from)."""
    if ModelSpec(**inputs.config["model"]).classes > 1:
        raise ConfigError(f"model={cfg.model} is a multi-class network: meanteacher learns binary "
                          "lesion masks (labels=multiclass trains with finetune)")
    train_ids, val_ids = split_cases(inputs.ds, cfg.fold, cfg.regime, cfg.train_cases, cfg.seed)
    check_same_split(inputs.ds, inputs.config, cfg.model, train_ids, val_ids)
    if inputs.pseudo is None and inputs.unlabelled is None:
        raise ConfigError("meanteacher has nothing unlabelled to learn from: give pseudo=<run> or "
                          "unlabelled=<preprocess run id or folder>")
    return train_ids, val_ids


def meanteacher(cfg: MeanteacherConfig, tracker=None, on_epoch_end=None,
                progress: bool = True) -> TrainedResult | None:
    if not cfg.model:
        raise ConfigError("meanteacher needs model=<finetune run> (and pseudo=<pseudolabel run> "
                          "for pseudo-labels)")
    if cfg.cv:
        raise ConfigError("cv= is finetune's: meanteacher trains one fold (fold=)")
    stage = Stage.begin(cfg, tracker, on_epoch_end, progress)
    tracker = stage.tracker
    inputs = from_main(lambda: resolve_inputs(cfg, tracker))  # torchrun: rank 0 alone
    ds = stage.ds = inputs.ds
    model, pseudo, unlabelled = inputs.model, inputs.pseudo, inputs.unlabelled
    tracker.link_source("model", inputs.model_run)
    if pseudo is not None:
        tracker.link_source("pseudo", inputs.pseudo_run)
    train_ids, val_ids = _split(cfg, inputs)
    spec = ModelSpec(**inputs.config["model"])
    stage.record_network(spec, **{Tag.PSEUDO_SOURCE: pseudo.source if pseudo is not None
                                  else "none", Tag.SEMI_METHOD: cfg.method})
    stage.record_split(train_ids, val_ids, ds.splits.test,
                       pseudo_items=len(pseudo) if pseudo is not None else 0,
                       unlabelled_slices=len(unlabelled) if unlabelled is not None else 0)
    n_unlabelled = len(unlabelled) if unlabelled is not None and cfg.consistency_weight > 0 else 0
    stage.record_plan(make_plan(ds, train_ids, plan_request(cfg),
                                unlabelled_slices=n_unlabelled))
    rampup = cfg.rampup_epochs or max(1, planned(stage.plan, "epochs") // 3)
    method = {"confidence": cfg.target_confidence} if cfg.method == "unimatch" else {}
    task = segmentation_task(model, ds, train_ids, val_ids, supervised_settings(cfg),
                             stage.device, stage.plan, cls=METHODS[cfg.method],
                             pseudo=pseudo, unlabelled=unlabelled, ema_alpha=cfg.ema_alpha,
                             consistency_weight=cfg.consistency_weight, rampup_epochs=rampup,
                             pseudo_weight=cfg.pseudo_weight, **method)
    extra = model_extra(ds, cfg, "segmentation", "meanteacher")
    result = stage.train(task, spec, extra, score_start=True, stop_after=rampup)
    if not stage.is_main:
        return None  # rank 0 evaluates and logs the model
    tracker.set_tags({Tag.BEST_NETWORK: task.best_is})
    trained = finalise_segmentation(stage, model, spec, result, train_ids, val_ids,
                                    {**extra, "best_network": task.best_is})
    trained.best_network = task.best_is
    return trained
