"""The trainer behind :func:`covidseg.train.loop.fit`: what a task gives the loop
(:class:`TrainTask`), the loop's settings (:class:`LoopSettings`) and result (:class:`FitResult`),
where the loop stands between epochs (:class:`LoopState`, part of the resume state) and the
:class:`Trainer` — the network, the optimiser, the per-iteration schedule, the gradient scaler, one
epoch of training and one of validation.  The loop's description: :mod:`covidseg.train.loop`."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn

from covidseg.base.device import autocast, grad_scaler, place_model
from covidseg.base.errors import ConfigError, TrainingDiverged
from covidseg.train import distributed
from covidseg.train.metric_keys import MetricKey, Moment
from covidseg.train.optim import make_optimizer, make_scheduler

log = logging.getLogger("covidseg.train")


class TrainTask(Protocol):
    """What a training stage provides to :func:`fit`."""

    model: nn.Module            # the network being optimised
    monitor: str                # validation metric deciding "best" (e.g. "val_volume_dice")
    monitor_mode: str           # "max" or "min"

    def batches(self, epoch: int):
        """Iterable of training batches for one epoch (seeded by epoch; under torchrun this
        rank's share)."""

    def steps_per_epoch(self) -> int:
        """How many batches :meth:`batches` yields per epoch (the schedule's unit)."""

    def train_through(self, module: nn.Module | None) -> None:
        """Training forwards go through ``module`` (the DDP wrapper of ``model``; None: model)."""

    def training_step(self, batch, step: int) -> tuple[torch.Tensor, dict]:
        """Loss of one batch (under autocast) and extra per-epoch-averaged logs."""

    def after_step(self, step: int) -> None:
        """Called after every optimiser step (e.g. the EMA teacher update)."""

    def validate(self, epoch: int) -> dict:
        """Validation metrics; must contain ``monitor``."""

    def best_network(self, metrics: dict) -> nn.Module:
        """The network to keep when ``monitor`` improves (the student, or the teacher)."""

    def state(self) -> dict:
        """Extra state of the task to resume it (tensors/plain values only)."""

    def load_state(self, state: dict) -> None: ...


@dataclass
class LoopSettings:
    epochs: int = 500
    patience: int = 30
    lr: float = 2e-4
    lr_step: int = 25
    lr_gamma: float = 0.8
    optimizer: str = "adam"
    weight_decay: float = 0.0
    schedule: str = "step"
    warmup: int = 0  # iterations
    grad_clip: float = 0.0  # max gradient norm (0: no clipping)
    keep: str = "best"  # "best" (by the task's monitor) or "last"
    checkpoint_every: int = 0
    amp: bool = True
    progress: bool = True
    resume_every_s: float = 60.0  # resume state: after the first epoch, then at most this often
    sync_bn: bool = False  # under torchrun on CUDA: SyncBatchNorm
    # a starting model worth keeping (the mean teacher starts from a fine-tuned one): validated
    # before the first step, kept if no epoch beats it (with keep="last" too)
    score_start: bool = False
    stop_after: int = 0  # epochs before which early stopping does not count (a ramp-up)


@dataclass
class FitResult:
    best_score: float
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    best_state: dict
    history: list[dict] = field(default_factory=list)
    stop_reason: str = ""


class StopTraining(Exception):
    """Raised by an ``on_epoch_end`` callback to end training early but normally (the best
    weights are then evaluated and kept as usual)."""


class AbortTraining(Exception):
    """Raised by an ``on_epoch_end`` callback to abandon the run on purpose (a pruned Optuna
    trial): it propagates, and no resume state is uploaded."""


def _improved(score: float, best: float, mode: str) -> bool:
    if not math.isfinite(score):
        return False
    if not math.isfinite(best):
        return True
    return score > best if mode == "max" else score < best


def _kept_state(module: nn.Module) -> dict:
    """A private copy of the weights where they are: on a GPU a device-side copy, no transfer or
    host synchronisation in the epoch that improves (the run's result is moved to the CPU once)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@dataclass
class LoopState:
    """Where the loop stands between epochs (part of the resume state)."""

    best_score: float
    best_state: dict
    epoch: int = -1  # the last finished epoch
    step: int = 0
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[dict] = field(default_factory=list)
    start_score: float = math.nan  # the starting model's score (LoopSettings.score_start)
    start_state: dict | None = None  # its weights, while keep="last" may still need them

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "best_score": self.best_score,
                "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
                "best_state": self.best_state, "history": list(self.history),
                "start_score": self.start_score, "start_state": self.start_state}

    def load_state_dict(self, d: dict) -> None:
        self.epoch, self.step = int(d["epoch"]), int(d["step"])
        self.best_score, self.best_epoch = float(d["best_score"]), int(d["best_epoch"])
        self.bad_epochs, self.best_state = int(d["bad_epochs"]), d["best_state"]
        self.history = list(d.get("history", []))
        self.start_score = float(d.get("start_score", math.nan))
        self.start_state = d.get("start_state")


def replica_difference(model: nn.Module, device: torch.device) -> float:
    """The largest difference between the ranks' copies of a weight fingerprint (0 when the
    replicas are equal, as DistributedDataParallel keeps them)."""
    import torch.distributed as dist

    fp = torch.stack([p.detach().double().sum() for p in model.parameters()]).to(device)
    low, high = fp.clone(), fp.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    return float((high - low).abs().max())


class Trainer:
    """The task's network, the optimiser, the per-iteration schedule, the gradient scaler and the
    :class:`LoopState`; one epoch of training (:meth:`train_epoch`) and of validation
    (:meth:`validate`)."""

    def __init__(self, task: TrainTask, settings: LoopSettings, device: torch.device):
        self.task, self.settings, self.device = task, settings, device
        self.world = distributed.world()
        self.model = place_model(task.model, device)
        if self.world.active and settings.sync_bn:
            distributed.sync_batchnorm(self.model, device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameter")
        self.params = params
        self.optimiser = make_optimizer(params, settings.optimizer, settings.lr,
                                        settings.weight_decay)
        self.iterations_per_epoch = max(1, int(task.steps_per_epoch()))
        self.scheduler = make_scheduler(
            self.optimiser, settings.schedule, settings.epochs * self.iterations_per_epoch,
            settings.warmup, self.iterations_per_epoch, settings.lr_step, settings.lr_gamma)
        self.scaler = (grad_scaler(device) if settings.amp
                       else torch.amp.GradScaler(device.type, enabled=False))
        use_amp = settings.amp and device.type == "cuda"
        self.amp_context = (lambda: autocast(device)) if use_amp else contextlib.nullcontext
        first = -math.inf if task.monitor_mode == "max" else math.inf
        self.state = LoopState(best_score=first, best_state=_kept_state(task.best_network({})))
        self.trained = distributed.data_parallel(self.model, device)  # DDP under torchrun

    def state_dict(self) -> dict:
        """Everything a killed run needs to continue exactly (see :mod:`covidseg.train.resume`)."""
        return {"model": self.model.state_dict(), "optimizer": self.optimiser.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                **self.state.state_dict(), "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "task": self.task.state(), "world_size": self.world.size}

    def load_state_dict(self, d: dict) -> None:
        if int(d.get("world_size", 1)) != self.world.size:
            raise ConfigError(f"the resume state was written by {d.get('world_size', 1)} "
                              f"training process(es); resume it with as many "
                              f"(now {self.world.size})")
        self.model.load_state_dict(d["model"])
        self.optimiser.load_state_dict(d["optimizer"])
        scheduler = dict(d["scheduler"])
        if "lr_lambdas" not in scheduler:  # a per-epoch StepLR state (before iteration counting)
            scheduler = {**self.scheduler.state_dict(), "last_epoch": int(d["step"])}
        self.scheduler.load_state_dict(scheduler)
        for group, factor in zip(self.optimiser.param_groups, self.scheduler.base_lrs):
            group["lr"] = factor * self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        self.scaler.load_state_dict(d["scaler"])
        self.state.load_state_dict(d)
        torch.set_rng_state(d["rng"])
        if torch.cuda.is_available() and d.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(d["cuda_rng"])
        self.task.load_state(d.get("task", {}))
        log.info("resuming at epoch %d (iteration %d, best %s=%.4f at epoch %d)",
                 self.state.epoch + 1, self.state.step, self.task.monitor, self.state.best_score,
                 self.state.best_epoch)

    def train_epoch(self, epoch: int, on_step: Callable[[int], None] | None = None) -> dict:
        """One pass over this rank's batches; the loss and the task's extra logs, averaged over
        the epoch's batches (and over ranks: one reduction per epoch)."""
        t0 = time.time()
        self.trained.train()
        total, n, extra_sums = 0.0, 0, {}
        lr = self.optimiser.param_groups[0]["lr"]  # logged: the epoch's first step's
        for batch in self.task.batches(epoch):
            self.optimiser.zero_grad(set_to_none=True)
            with self.amp_context():
                loss, extra = self.task.training_step(batch, self.state.step)
            self.scaler.scale(loss).backward()
            if self.settings.grad_clip > 0:
                self.scaler.unscale_(self.optimiser)
                torch.nn.utils.clip_grad_norm_(self.params, self.settings.grad_clip)
            self.scaler.step(self.optimiser)
            self.scaler.update()
            self.scheduler.step()
            self.state.step += 1
            self.task.after_step(self.state.step)
            total += loss.detach()
            n += 1
            for k, v in extra.items():  # summed on the device: one sync per epoch, not per step
                extra_sums[k] = extra_sums.get(k, 0.0) + (v.detach() if torch.is_tensor(v) else v)
            if on_step is not None:
                on_step(self.state.step)
        means = {"train_loss": total / max(n, 1),
                 **{k: v / max(n, 1) for k, v in extra_sums.items()}}
        metrics = {**distributed.average(means, self.device), "lr": lr,
                   "train_seconds": time.time() - t0}
        if not math.isfinite(metrics["train_loss"]):
            raise TrainingDiverged(f"the training loss became {metrics['train_loss']} in epoch "
                                   f"{epoch}: lower lr or check the data")
        return metrics

    def score_start(self) -> dict:
        """Validate the starting weights (rank 0, sent to every rank) and make them the best so
        far: a run that only makes them worse keeps them.  Returns the metrics."""
        metrics = self.task.validate(-1) if self.world.is_main else {}
        metrics = distributed.broadcast(metrics)
        st = self.state
        st.start_score = float(metrics.get(self.task.monitor, float("nan")))
        if math.isfinite(st.start_score):
            st.best_score, st.best_epoch = st.start_score, -1
            st.best_state = _kept_state(self.task.best_network(metrics))
            if self.settings.keep == "last":
                st.start_state = st.best_state
        return metrics

    def validate(self, epoch: int, metrics: dict, started: float) -> dict:
        """The task's validation (rank 0; its metrics sent to every rank, so that all decide
        alike), then the best weights and the epoch's history entry."""
        if self.world.is_main:
            metrics = {**metrics, **self.task.validate(epoch),
                       "epoch_seconds": time.time() - started}
        metrics = distributed.broadcast(metrics)
        st, monitor = self.state, self.task.monitor
        score = float(metrics.get(monitor, float("nan")))
        if _improved(score, st.best_score, self.task.monitor_mode):
            st.best_score, st.best_epoch, st.bad_epochs = score, epoch, 0
            st.best_state = _kept_state(self.task.best_network(metrics))
        else:
            st.bad_epochs += 1
        metrics[str(MetricKey.parse(monitor).at(Moment.BEST))] = st.best_score
        st.epoch = epoch
        st.history.append({"epoch": epoch, **metrics})
        return metrics

    def settle_kept_weights(self, reason: str) -> str:
        """After the last epoch: with ``keep="last"`` the final weights are the model, unless the
        starting model validates better (training only made it worse); returns the stop reason
        with what was kept said."""
        st, task = self.state, self.task
        if self.settings.keep == "last" and st.history:
            last = st.history[-1]
            final = float(last.get(task.monitor, float("nan")))
            if st.start_state is not None and _improved(st.start_score, final, task.monitor_mode):
                st.best_state, st.best_epoch, st.best_score = st.start_state, -1, st.start_score
                reason = (f"{reason}; the starting model ({task.monitor} {st.start_score:.4f}) "
                          f"beat the last weights ({final:.4f}) and is kept")
            else:
                st.best_state = _kept_state(task.best_network(last))
                st.best_epoch, st.best_score = st.epoch, final
        elif (self.settings.score_start and st.best_epoch == -1
              and math.isfinite(st.start_score)):
            reason = f"{reason}; no epoch beat the starting model: it is kept"
        st.start_state = None
        return reason
