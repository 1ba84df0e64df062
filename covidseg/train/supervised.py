"""What supervised training on labelled cases needs, whichever stage runs it (finetune, the
mean teacher, the benchmarks): the network to start from (scratch, a Models Genesis file, a
logged model), with as many outputs as the data has classes; a fold's training cases; the
augmentation ``augment`` names; the one segmentation task (2D slices or the coarse 3D U-Net's
volumes) with its loss; slices to re-estimate frozen norm statistics on.  What it reads of a
finetune or meanteacher configuration is :class:`SupervisedSettings`, which the stage builds
(:func:`covidseg.stages.stage.supervised_settings`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from covidseg.base.errors import ConfigError
from covidseg.data.augment import make_augment
from covidseg.data.store import PreprocessedDataset
from covidseg.inference import is_3d
from covidseg.models.checkpoint import load_model
from covidseg.models.factory import ModelSpec, build_model, load_encoder_weights
from covidseg.models.genesis import (
    flatten_genesis_3d,
    is_genesis_state,
    read_checkpoint_state,
)
from covidseg.train.losses import SegmentationLoss
from covidseg.train.plan import Plan, is_slice_dataset, planned
from covidseg.train.tasks import SegmentationTask, VolumeTask, default_workers

log = logging.getLogger("covidseg.finetune")


@dataclass(frozen=True)
class SupervisedSettings:
    """What the segmentation task of a supervised run is set up with: its loss (``loss``, the
    ``dice`` term, the lesion class's ``pos_weight``, 0: unweighted), batches (``batch_size``
    slices of side ``image_size``, 0: whole padded slices, slices with lesion ``lesion_boost``
    times more often, ``mixup``), augmentation (``augment`` as named, ``auto`` decided with the
    ``recipe``), DataLoader ``workers`` (-1: from the CPU count), ``seed``, the decision
    ``threshold`` of its validation and ``iterations_per_epoch`` when there is no plan."""

    loss: str = "ce+dice"
    dice: str = "batch"
    pos_weight: float = 0.0
    mixup: bool = False
    augment: str = "auto"
    recipe: str = "covidseg"
    batch_size: int = 8
    workers: int = -1
    image_size: int = 0
    lesion_boost: float = 1.0
    seed: int = 0
    threshold: float = 0.5
    iterations_per_epoch: int = 0


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


class InitialModel(NamedTuple):
    """The network training starts from, what it was built of (``report``, logged as
    ``init/report.json``) and the run it came from (None: scratch or a file)."""

    model: torch.nn.Module
    spec: ModelSpec
    report: dict
    run: str | None


def initial_model(init: str, arch: str, encoder: str, encoder_weights: str = "",
                  classes: int = 1) -> InitialModel:
    """The starting network for ``init``: ``scratch`` (an ``arch``/``encoder`` network, its
    encoder from the ``encoder_weights`` file if given), a Models Genesis checkpoint file, a
    covidseg model folder, a run id or a model URI; ``classes`` outputs."""
    start = _initial_model(init, arch, encoder, encoder_weights, classes)
    model, spec = with_classes(start.model, start.spec, classes, start.report)
    return start._replace(model=model, spec=spec)


def _initial_model(init: str, arch: str, encoder: str, encoder_weights: str,
                   classes: int) -> InitialModel:
    if init == "scratch":
        spec = ModelSpec(arch=arch, encoder=encoder, classes=classes)
        model = build_model(spec)
        report = {"init": "scratch", "encoder_weights": encoder_weights or None}
        if encoder_weights:  # what the file gave: used, missing, adapted to 1 channel
            report["encoder_weights_loaded"] = load_encoder_weights(model, encoder_weights)
        return InitialModel(model, spec, report, None)
    path = Path(init).expanduser()
    if path.is_file():
        state = read_checkpoint_state(path)
        if not is_genesis_state(state):
            raise ConfigError(f"{path}: not a Models Genesis checkpoint; for a covidseg model give "
                              "its folder, run id or model URI")
        if arch not in ("unet", "genesis-unet"):
            raise ConfigError(f"init={path.name} is a Models Genesis checkpoint: it fits "
                              f"arch=genesis-unet, not arch={arch}")
        spec = ModelSpec(arch="genesis-unet", encoder="genesis")
        model = build_model(spec)
        report = flatten_genesis_3d(state, model)
        log.info("Models Genesis: %d tensors flattened into the 2D U-Net, %d skipped, %d missing",
                 len(report["consumed"]), len(report["skipped"]), len(report["missing"]))
        return InitialModel(model, spec, {"init": "models-genesis", "file": path.name, **report},
                            None)
    from covidseg.tracking import download_model

    model_dir, source_run = download_model(init)
    model, config = load_model(model_dir, single=True)
    spec = ModelSpec(**config["model"])
    if (spec.arch, spec.encoder) != (arch, encoder):
        log.warning("init model is %s/%s: that architecture is used (arch=%s encoder=%s ignored)",
                    spec.arch, spec.encoder, arch, encoder)
    return InitialModel(model, spec, {"init": init, "arch": spec.arch, "encoder": spec.encoder,
                                      "pretrained_as": config.get("task", "")}, source_run)


def split_cases(ds: PreprocessedDataset, fold: int, regime: str = "standard",
                train_cases: int = 0, seed: int = 0) -> tuple[list[str], list[str]]:
    """(training, validation) case ids of fold ``fold`` in ``regime``; ``train_cases`` > 0 keeps
    that many training cases, drawn with ``seed``."""
    train, val = ds.splits.fold(fold, regime)
    if train_cases:
        if train_cases > len(train):
            raise ConfigError(f"train_cases={train_cases} but fold {fold} ({regime}) has "
                              f"{len(train)} training volumes")
        pick = np.random.default_rng(seed).permutation(len(train))[:train_cases]
        train = sorted(train[i] for i in pick)
    if not train or not val:
        raise ConfigError(f"fold {fold} ({regime}) has {len(train)} training and "
                          f"{len(val)} validation volumes; both must be non-empty")
    return train, val


def trained_split(ds: PreprocessedDataset, model_config: dict) -> tuple[list, list] | None:
    """The (training, validation) cases a logged model was trained and validated on, from its
    ``model.json`` (the training parameters it records); None when it was trained on another
    dataset or records no fold (an older model, a Models Genesis file)."""
    params = model_config.get("training", {})
    if model_config.get("dataset_key") != ds.key or str(params.get("fold", "")) == "":
        return None
    if int(params.get("cv") or 0) > 1:
        return None  # a cross-validation ensemble: every labelled case trained it
    return split_cases(ds, int(params["fold"]), params.get("regime") or "standard",
                       int(params.get("train_cases") or 0), int(params.get("seed") or 0))


def check_same_split(ds: PreprocessedDataset, model_config: dict, model_ref: str,
                     train_ids: list, val_ids: list) -> None:
    """Refuse, in one line, a run whose validation cases are not the starting model's: a model
    that trained on them would be validated on its own training data."""
    trained = trained_split(ds, model_config)
    if trained is None or (sorted(trained[0]), sorted(trained[1])) == (sorted(train_ids),
                                                                        sorted(val_ids)):
        return
    params = model_config.get("training", {})
    given = ", ".join(f"{k}={params.get(k)}" for k in ("fold", "regime", "train_cases", "seed"))
    raise ConfigError(f"model={model_ref} was trained on another split ({given}); give the same "
                      "fold, regime, train_cases and seed, so that its validation cases stay "
                      "unseen")


def calibration_batches(slices, batch_size: int, limit: int = 256):
    """Up to ``limit`` training slices spread over the set, as training sees them (epoch 0's
    augmentation), in batches: the data a frozen norm layer's statistics are re-estimated on."""
    n = len(slices)
    idx = np.unique(np.linspace(0, n - 1, min(n, limit)).round().astype(int)) if n else []
    for start in range(0, len(idx), batch_size):
        yield torch.stack([slices[(0, int(i))][0] for i in idx[start:start + batch_size]])


def augmentation(ds: PreprocessedDataset, name: str = "auto", recipe: str = "covidseg"):
    """The training augmentation ``name`` names (``auto``: ``strong``; with ``recipe=thesis``
    the slice preset for a set of 2D slices, the thesis's CT preset for volumes); None for
    ``none``.  ``strong`` fills and augments as the data needs: a 2D slice set's background is its
    minimum, a CT volume's is 0 outside the lungs."""
    slices = is_slice_dataset(ds)
    if name == "auto":
        name = ("slice" if slices else "ct") if recipe == "thesis" else "strong"
    try:
        return make_augment(name, background="min" if slices else "zero")
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def segmentation_task(model, ds, train_ids, val_ids, settings: SupervisedSettings, device,
                      plan: Plan | None = None, cls=SegmentationTask, **extra):
    """The task that trains ``model`` on ``train_ids`` of ``ds`` and validates on ``val_ids``:
    whole volumes for the coarse 3D U-Net, else ``cls`` on 2D slices (``extra``: what the mean
    teacher's task adds); ``plan``'s iterations per epoch when there is one."""
    s = settings
    classes = dataset_classes(ds)
    if classes > 1 and s.mixup:
        raise ConfigError("mixup mixes binary masks: it does not apply to labels=multiclass")
    if classes > 1 and is_3d(model):
        raise ConfigError("labels=multiclass trains 2D networks: arch=unet3d (the coarse 3D "
                          "U-Net) segments the lesion union only")
    loss = SegmentationLoss(s.loss, pos_weight=s.pos_weight or None, classes=classes,
                            dice=s.dice)
    iterations = (planned(plan, "iterations_per_epoch") if plan is not None
                  else s.iterations_per_epoch)
    common = {"seed": s.seed, "eval_batch": max(s.batch_size, 16), "threshold": s.threshold,
              "iterations": iterations}
    if is_3d(model):  # the coarse 3D U-Net (arch=unet3d): whole volumes at low resolution
        if extra:
            raise ConfigError("meanteacher trains 2D networks, not arch=unet3d")
        return VolumeTask(model, ds, train_ids, val_ids, loss, device, **common)
    return cls(model, ds, train_ids, val_ids, loss, device, batch_size=s.batch_size,
               workers=default_workers(s.workers), augment=augmentation(ds, s.augment, s.recipe),
               crop=s.image_size, lesion_boost=s.lesion_boost, use_mixup=s.mixup,
               **common, **extra)
