"""The loop's epoch handlers: each sees (trainer, epoch, metrics) after an epoch's validation and
may return a reason to stop — the metric logger, the ``on_epoch_end`` callbacks, early stopping,
the resume writer — and the intermediate checkpoints, saved by iteration."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

from torch import nn

from covidseg.train.resume import ResumeWriter, snapshot
from covidseg.train.trainer import StopTraining, Trainer

log = logging.getLogger("covidseg.train")


def checkpoint_due(step: int, every: int, first: int = 10) -> bool:
    """Whether iteration ``step`` gets an intermediate checkpoint (iteration 0, the starting point,
    always gets one when checkpoints are on): every ``every`` iterations for
    the first ``first`` ones; after that the spacing doubles each time the run's length doubles
    (``first``/2 checkpoints per doubling), so a long run keeps O(log length) of them."""
    if every <= 0 or step <= 0 or step % every:
        return False
    q = step // every
    return q % 2 ** max(0, math.ceil(math.log2(q / first))) == 0



class MetricLogger:
    """Per-epoch metrics to the tracker at ``step = epoch`` (not those a killed run had logged)."""

    def __init__(self, tracker, already_logged_epoch: int = -1):
        self.tracker, self.logged = tracker, already_logged_epoch

    def __call__(self, trainer: Trainer, epoch: int, metrics: dict) -> str:
        if epoch > self.logged:
            self.tracker.log_metrics(metrics, step=epoch)
        return ""


class Callbacks:
    """``on_epoch_end`` callbacks (Optuna's pruning reports): :class:`StopTraining` ends the
    run normally, :class:`AbortTraining` propagates."""

    def __init__(self, callbacks):
        self.callbacks = list(callbacks or ())

    def __call__(self, trainer: Trainer, epoch: int, metrics: dict) -> str:
        try:
            for cb in self.callbacks:
                cb(epoch, metrics)
        except StopTraining as exc:
            return str(exc) or "stopped by callback"
        return ""


class EarlyStop:
    """Stop after ``patience`` epochs without improvement, never before epoch ``after`` (a
    ramp-up: a mean teacher's consistency weight reaches its value only then)."""

    def __init__(self, patience: int, after: int = 0):
        self.patience, self.after = patience, after

    def __call__(self, trainer: Trainer, epoch: int, metrics: dict) -> str:
        if (self.patience and epoch + 1 >= self.after
                and trainer.state.bad_epochs >= self.patience):
            return f"no improvement for {self.patience} epochs"
        return ""


class ResumeSaver:
    """The resume state after the first epoch, then at most every ``every_s`` seconds — not after
    the last one: the run logs the trained model itself, and that write (~0.5 s for a ResNet-34
    + Adam) would be a per-run cost the size of a whole epoch on a GPU.  Snapshotted here,
    written by a background thread; :meth:`close` waits for the write."""

    def __init__(self, path: Path, every_s: float):
        self.writer, self.every_s = ResumeWriter(path), every_s
        self.first, self.last = None, time.time()

    def __call__(self, trainer: Trainer, epoch: int, metrics: dict) -> str:
        if self.first is None:
            self.first = epoch
        if epoch == self.first or time.time() - self.last >= self.every_s:
            self.last = time.time()
            self.writer.submit(snapshot(trainer.state_dict()))
        return ""

    def close(self) -> None:
        self.writer.wait()


class CheckpointSaver:
    """``save(model, iteration)`` at iteration 0 (a fresh run's starting point) and whenever
    :func:`checkpoint_due`."""

    def __init__(self, save: Callable[[nn.Module, int], None], every: int):
        self.save, self.every = save, every

    def start(self, trainer: Trainer, resumed: bool) -> None:
        if self.every > 0 and not resumed:
            self._save(trainer.model, 0)  # the starting point: SVCCA of any run, however short

    def step(self, trainer: Trainer, step: int) -> None:
        if checkpoint_due(step, self.every):
            self._save(trainer.model, step)

    def _save(self, model: nn.Module, step: int) -> None:
        """A checkpoint the file system refuses (disk full) is warned about once and ends the
        intermediate checkpoints; training goes on."""
        try:
            self.save(model, step)
        except OSError as exc:
            self.every = 0
            log.warning("could not write the checkpoint of iteration %d (%s): training goes on "
                        "without intermediate checkpoints", step, exc.strerror or exc)
