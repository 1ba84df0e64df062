"""The one training loop: pretrain, finetune and meanteacher (and every tune trial) run through it.

What differs between them lives in a *task* (:class:`TrainTask`): how a batch becomes a loss,
what happens after an optimiser step (the mean-teacher's EMA), how validation is scored, which
network is kept as "best".  The loop itself owns the rest, once:

* the optimiser over the task's trainable parameters and a learning rate set at every iteration
  (:mod:`covidseg.train.optim`: AdamW/SGD/Adam; warm-up, then cosine, poly or the thesis's
  step schedule), gradients clipped to ``grad_clip``; an epoch is ``iterations_per_epoch``
  optimiser steps (the task's :meth:`~TrainTask.steps_per_epoch`), a run ``epochs`` of them;
* mixed precision on CUDA (:mod:`covidseg.base.device`), float32 on CPU — same code;
* per-epoch metrics (``train_loss``, ``lr``, ``train_seconds``, ``epoch_seconds`` (with the
  validation) and the task's validation metrics)
  at ``step = epoch``;
* the weights kept: the last ones (``keep=last``: with a schedule that decays to 0 the final
  weights are the trained model, as nnU-Net keeps them, and no held-out case chooses them) or the
  best by the task's monitored metric (``keep=best``, the thesis); early stop after ``patience``
  epochs without improvement (0: never);
* an intermediate checkpoint every ``checkpoint_every`` iterations, logged (for SVCCA);
* a resume state (model, optimiser, scheduler, scaler, epoch, early-stop counter, best weights,
  RNG, the task's own state) written locally after the first epoch and then at most every
  ``resume_every_s`` seconds (a few hundred MB for a ResNet-34 U-Net with Adam's
  moments: writing it after every short epoch cost 5-20 % of training time) — snapshotted on the
  training thread, written by a background thread (:mod:`covidseg.train.resume`) so that the next
  epoch does not wait for the disk; ``resume`` continues from it in the same MLflow run, re-training
  the epochs after the state without logging any epoch twice;
* ``on_epoch_end`` callbacks (Optuna's pruning reports) that may stop the run;
* under ``torchrun``, DistributedDataParallel (:mod:`covidseg.train.distributed`): sharded
  epochs, gradients and the epoch's losses averaged over ranks, validation and the resume
  state on rank 0, its metrics broadcast so that every rank stops at the same epoch.

:func:`fit` drives a :class:`Trainer` (model, optimiser, scheduler, scaler and a
:class:`LoopState`; ``state_dict``/``load_state_dict`` are the resume state) through its epochs and
hands each epoch's metrics to small handlers, in order: the metric logger, the ``on_epoch_end``
callbacks, early stopping, the resume writer.  A handler may return a reason to stop.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from covidseg.tracking import NullTracker
from covidseg.train.handlers import (
    Callbacks,
    CheckpointSaver,
    EarlyStop,
    MetricLogger,
    ResumeSaver,
    checkpoint_due,
)
from covidseg.train.metric_keys import MetricKey, Moment
from covidseg.train.trainer import (
    AbortTraining,
    FitResult,
    LoopSettings,
    StopTraining,
    Trainer,
    TrainTask,
    replica_difference,
)

__all__ = ["AbortTraining", "FitResult", "LoopSettings", "StopTraining", "TrainTask", "Trainer",
           "checkpoint_due", "fit", "run_epochs"]


def run_epochs(trainer: Trainer, handlers: list, checkpoints: CheckpointSaver | None,
               progress: bool) -> tuple[bool, str]:
    """Train until ``epochs``, or until a handler gives a reason to stop (every handler still
    sees that epoch); returns (stopped early, reason)."""
    from tqdm import tqdm

    settings, task, start = trainer.settings, trainer.task, trainer.state.epoch + 1
    bar = tqdm(range(start, settings.epochs), desc="train", unit="epoch", initial=start,
               total=settings.epochs, disable=not progress or not trainer.world.is_main)
    on_step = (lambda step: checkpoints.step(trainer, step)) if checkpoints else None
    try:
        for epoch in bar:
            t0 = time.time()
            metrics = trainer.validate(epoch, trainer.train_epoch(epoch, on_step), t0)
            bar.set_postfix(loss=f"{metrics['train_loss']:.4f}",
                            **{task.monitor: f"{metrics.get(task.monitor, float('nan')):.4f}"})
            reasons = [h(trainer, epoch, metrics) for h in handlers]
            stop = next((r for r in reasons if r), "")
            if stop:
                return True, stop
    finally:
        bar.close()
    return False, "max epochs"


def fit(task: TrainTask, settings: LoopSettings, device: torch.device, tracker=None,
        workdir: Path | None = None, resume_state: dict | None = None,
        save_checkpoint: Callable[[nn.Module, int], None] | None = None,
        on_epoch_end: list[Callable[[int, dict], None]] | None = None,
        already_logged_epoch: int = -1) -> FitResult:
    """Train ``task.model`` and return the best weights and the history.

    ``workdir`` receives ``last.pt`` (the resume state; see ``LoopSettings.resume_every_s``).
    ``save_checkpoint`` (model, iteration) is called every ``checkpoint_every`` iterations.
    Epochs up to ``already_logged_epoch`` (those a killed run had logged) are not logged again on
    resume.
    """
    tracker = tracker or NullTracker()
    trainer = Trainer(task, settings, device)
    if resume_state is not None:
        trainer.load_state_dict(resume_state)
    saver = ResumeSaver(Path(workdir) / "last.pt", settings.resume_every_s) if workdir else None
    handlers = [MetricLogger(tracker, already_logged_epoch), Callbacks(on_epoch_end),
                EarlyStop(settings.patience, settings.stop_after), *([saver] if saver else [])]
    checkpoints = (CheckpointSaver(save_checkpoint, settings.checkpoint_every)
                   if save_checkpoint and settings.checkpoint_every > 0 else None)
    if checkpoints:
        checkpoints.start(trainer, resumed=resume_state is not None)
    if settings.score_start and resume_state is None:
        start = trainer.score_start()
        tracker.log_metrics({str(MetricKey.parse(k).at(Moment.START)): v
                             for k, v in start.items() if isinstance(v, (int, float))})
    task.train_through(trainer.trained)
    try:
        stopped, reason = run_epochs(trainer, handlers, checkpoints, settings.progress)
    except BaseException:
        if saver is not None:  # the last state is on disk before the run uploads it
            with contextlib.suppress(Exception):
                saver.close()
        raise
    finally:
        task.train_through(None)
    if saver is not None:
        saver.close()  # last.pt is complete before anyone reads it
    if trainer.world.active:  # DDP keeps the replicas equal: the run records that it did
        tracker.log_metrics({"replica_max_difference": replica_difference(trainer.model, device)})
    reason = trainer.settle_kept_weights(reason)
    st = trainer.state
    return FitResult(best_score=st.best_score, best_epoch=st.best_epoch, epochs_run=st.epoch + 1,
                     stopped_early=stopped,
                     best_state={k: v.cpu() for k, v in st.best_state.items()},
                     history=st.history, stop_reason=reason)
