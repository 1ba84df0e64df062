"""What every training entry point does around :func:`covidseg.train.loop.fit`, written once
(:class:`Stage`): seeding and the device, the split and network records, the local work folder,
resume state (local, else from the run; the configuration a killed run was started with),
intermediate checkpoints logged to the run, the training curves, and removing the work folder
once the model is uploaded; and the settings the layers below take, built from the
configuration."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from covidseg.base.errors import CovidsegError
from covidseg.base.paths import cache_root
from covidseg.config import TrainingConfig
from covidseg.models.checkpoint import save_model
from covidseg.models.factory import ModelSpec
from covidseg.stages.results import TrainedResult
from covidseg.stages.settings import loop_settings
from covidseg.tracking import Tag
from covidseg.tracking.client import server_lost
from covidseg.train import distributed, figures
from covidseg.train.loop import AbortTraining, FitResult, fit
from covidseg.train.plan import Plan, planned
from covidseg.train.resume import find_resume_state

log = logging.getLogger("covidseg.train")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def workdir_for(run_id: str | None) -> Path:
    """Local folder of a run's training state (kept until the run has uploaded its model)."""
    name = run_id or f"local-{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(4).hex()}"
    d = cache_root() / "training" / name
    d.mkdir(parents=True, exist_ok=True)
    return d


def run_description(monitor: str, result: FitResult) -> str:
    """The run's description in the MLflow UI (Markdown): where its few charts that matter are,
    and how training ended."""
    best = (f"the starting model's ({result.best_score:.4f})" if result.best_epoch < 0
            else f"epoch {result.best_epoch}'s ({result.best_score:.4f})")
    return (f"**Training curves** (train loss, `{monitor}`, learning rate per epoch): artifact "
            "`figures/training_curves.png` (Artifacts tab). Charts to compare runs by: "
            f"`train_loss`, `{monitor}`, `lr`.\n\n{result.epochs_run} epochs; kept weights: "
            f"{best}; stopped: {result.stop_reason or 'max epochs'}.")


@dataclass
class Stage:
    """One training stage's context, set up once for pretrain, finetune and meanteacher: its
    configuration, tracker, device, dataset, local work folder and how its epochs report."""

    cfg: TrainingConfig
    tracker: object
    device: torch.device
    ds: object = None  # the PreprocessedDataset, once opened
    workdir: Path | None = None  # rank 0's local training state, once training has started
    progress: bool = True
    on_epoch_end: list | None = None
    plan: Plan | None = None  # what the dataset decided (finetune, meanteacher)
    # what a finished run leaves (rank 0): its result, network, spec, model.json extras and
    # final evaluations by split
    result: TrainedResult | None = None
    model: object = None
    spec: ModelSpec | None = None
    extra: dict = field(default_factory=dict)
    evaluations: dict = field(default_factory=dict)

    @classmethod
    def begin(cls, cfg: TrainingConfig, tracker=None, on_epoch_end=None,
              progress: bool = True) -> Stage:
        """Seeded, on its device (this process's GPU under torchrun)."""
        from covidseg.base.device import resolve_device
        from covidseg.tracking import NullTracker

        seed_everything(cfg.seed)
        return cls(cfg, tracker or NullTracker(), resolve_device(cfg.device), progress=progress,
                   on_epoch_end=on_epoch_end)

    @property
    def is_main(self) -> bool:
        """Rank 0 (or a single process): the one that evaluates, logs and uploads."""
        return distributed.world().is_main

    def record_network(self, spec: ModelSpec, **tags) -> None:
        self.tracker.set_tags({Tag.ARCH: spec.arch, Tag.ENCODER: spec.encoder,
                               Tag.DEVICE: str(self.device), **tags})

    def record_plan(self, plan: Plan) -> None:
        """Keep ``plan`` for the loop and log it: ``plan.json``, and what runs as parameters
        (``plan_epochs``, ``plan_iterations_per_epoch``, ``plan_total_iterations``; the run's own
        ``epochs``/``iterations_per_epoch`` parameters say 0 when the plan decided)."""
        self.plan = plan
        self.tracker.log_dict(plan.to_dict(), "plan.json")
        self.tracker.log_params({"plan_kind": plan.kind,
                                 "plan_epochs": planned(plan, "epochs"),
                                 "plan_iterations_per_epoch": planned(plan,
                                                                      "iterations_per_epoch"),
                                 "plan_total_iterations": plan.total_iterations})
        log.info("plan (%s): %d epochs of %s iterations, %d in all%s", plan.kind,
                 planned(plan, "epochs"), planned(plan, "iterations_per_epoch") or "one pass of",
                 plan.total_iterations,
                 f"; given: {plan.given}" if plan.given else "")

    def record_split(self, train_ids, val_ids, test_ids=None, **metrics) -> None:
        split = {"train": train_ids, "val": val_ids}
        if test_ids is not None:
            split["test"] = test_ids
        self.tracker.log_dict(split, "split.json")
        self.tracker.log_metrics({"train_volumes": len(train_ids), "val_volumes": len(val_ids),
                                  **metrics})

    def train(self, task, spec: ModelSpec, model_extra: dict, **stage_settings) -> FitResult:
        """Fit ``task`` with the run's resume/checkpoint plumbing (sets :attr:`workdir`).

        Intermediate checkpoints go to the run as ``checkpoints/step_NNNNNN/``; the resume state
        is written to the work folder after each epoch and uploaded as ``resume/last.pt`` if the
        run stops with an error (so it can be resumed from another machine).  Under torchrun
        only rank 0 writes, logs and reads the resume state (sent to the other ranks); the run
        records ``world_size`` and ``effective_batch_size``.
        """
        cfg, tracker, main = self.cfg, self.tracker, self.is_main
        world = distributed.world()
        self.workdir = workdir = workdir_for(tracker.run_id) if main else None
        tracker.log_params({"world_size": world.size,
                            "effective_batch_size": cfg.batch_size * world.size})
        resume_state, logged = None, -1
        if cfg.resume:
            if main:
                resume_state = find_resume_state(cfg.resume, workdir)
                logged = tracker.last_step("train_loss")
            resume_state = distributed.broadcast(resume_state)

        def save_checkpoint(model, step: int) -> None:
            d = workdir / "checkpoints" / f"step_{step:06d}"
            try:
                save_model(d, model, spec, {**model_extra, "iteration": step},
                           dtype=torch.float16)
                tracker.log_artifacts(d, f"checkpoints/step_{step:06d}")
            finally:  # uploaded, or a partial write (disk full): nothing stays behind
                shutil.rmtree(d, ignore_errors=True)

        try:
            settings = loop_settings(cfg, self.progress, self.plan, **stage_settings)
            result = fit(task, settings, self.device, tracker,
                         workdir, resume_state, save_checkpoint if main else None,
                         self.on_epoch_end, already_logged_epoch=logged)
        except AbortTraining:
            raise  # abandoned on purpose (a pruned trial): nothing to resume
        except BaseException as exc:
            lost = (isinstance(exc, Exception) and not isinstance(exc, CovidsegError)
                    and server_lost(exc))  # no minute of retries for an upload that cannot land
            if main and (workdir / "last.pt").exists() and tracker.enabled and not lost:
                with contextlib.suppress(Exception):
                    tracker.log_artifact(workdir / "last.pt", "resume")
            raise
        tracker.log_metrics({"best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                             "stopped_early": float(result.stopped_early)})
        tracker.set_tags({Tag.STOP_REASON: result.stop_reason})
        if result.history:
            tracker.figure("figures/training_curves.png", figures.training_curves,
                           result.history, task.monitor)
            tracker.set_tags({"mlflow.note.content": run_description(task.monitor, result)})
        return result

    def save_final_model(self, model, spec: ModelSpec, extra: dict) -> Path:
        """The trained model written to the work folder (to be logged).  When the file system
        refuses it (disk full) the partial folder is removed and one line says what the run has
        kept: its metrics and evaluation are logged already."""
        from covidseg.base.errors import DiskFull

        target = self.workdir / "model"
        try:
            return save_model(target, model, spec, extra)
        except OSError as exc:
            shutil.rmtree(target, ignore_errors=True)
            kept = (f"run {self.tracker.run_id} keeps its metrics and evaluation"
                    if self.tracker.enabled else "nothing was kept")
            raise DiskFull(f"could not write the trained model to {target} "
                           f"({exc.strerror or exc}); {kept}; free space there (or set "
                           "COVIDSEG_CACHE to a larger disk) and train again") from exc

    def finish(self) -> None:
        """The model is uploaded: the local training state is no longer needed."""
        if self.tracker.enabled and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
