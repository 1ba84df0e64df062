"""The one training loop: pretrain, finetune and meanteacher (and every tune trial) run through it.

What differs between them lives in a *task* (:class:`TrainTask`): how a batch becomes a loss,
what happens after an optimiser step (the mean-teacher's EMA), how validation is scored, which
network is kept as "best".  The loop itself owns the rest, once:

* Adam over the task's trainable parameters, StepLR (×``lr_gamma`` every ``lr_step`` epochs);
* mixed precision on CUDA (:mod:`covidseg.device`), float32 on CPU — same code;
* per-epoch metrics (``train_loss``, ``lr``, ``train_seconds``, ``epoch_seconds`` (with the
  validation) and the task's validation metrics)
  at ``step = epoch``;
* best weights by the task's monitored metric, early stop after ``patience`` epochs without
  improvement;
* an intermediate checkpoint every ``checkpoint_every`` iterations, logged (for SVCCA);
* a resume state (model, optimiser, scheduler, scaler, epoch, early-stop counter, best weights,
  RNG, the task's own state) written locally after the first epoch and then at most every
  ``resume_every_s`` seconds (a few hundred MB for a ResNet-34 U-Net with Adam's
  moments: writing it after every short epoch cost 5-20 % of training time) — snapshotted on the
  training thread, written by a background thread (:class:`ResumeWriter`) so that the next epoch
  does not wait for the disk; ``resume`` continues from it in the same MLflow run, re-training
  the epochs after the state without logging any epoch twice;
* ``on_epoch_end`` callbacks (Optuna's pruning reports) that may stop the run;
* under ``torchrun``, DistributedDataParallel (:mod:`covidseg.train.distributed`): sharded
  epochs, gradients and the epoch's losses averaged over ranks, validation and the resume
  state on rank 0, its metrics broadcast so that every rank stops at the same epoch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import torch
from torch import nn

from covidseg.device import autocast, grad_scaler, place_model
from covidseg.errors import ConfigError, TrainingDiverged
from covidseg.train import distributed
from covidseg.tracking import NullTracker

log = logging.getLogger("covidseg.train")


class TrainTask(Protocol):
    """What a training stage provides to :func:`fit`."""

    model: nn.Module            # the network being optimised
    monitor: str                # validation metric deciding "best" (e.g. "val_volume_dice")
    monitor_mode: str           # "max" or "min"

    def batches(self, epoch: int):
        """Iterable of training batches for one epoch (seeded by epoch; under torchrun this
        rank's share)."""

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
    checkpoint_every: int = 0
    amp: bool = True
    progress: bool = True
    resume_every_s: float = 60.0  # resume state: after the first epoch, then at most this often
    sync_bn: bool = False  # under torchrun on CUDA: SyncBatchNorm


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


def save_resume_state(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_resume_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def snapshot(obj):
    """A CPU copy of a (nested) state that training will keep mutating in place."""
    if torch.is_tensor(obj):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(snapshot(v) for v in obj)
    return obj


class ResumeWriter:
    """Writes resume states to ``path`` in a background thread, one at a time, atomically (a kill
    mid-write leaves the previous complete state).  :meth:`wait` re-raises a write error."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, state: dict) -> None:
        self.wait()
        self._thread = threading.Thread(target=self._write, args=(state,), daemon=True,
                                        name="covidseg-resume-writer")
        self._thread.start()

    def _write(self, state: dict) -> None:
        try:
            save_resume_state(self.path, state)
        except BaseException as exc:  # reported by wait() on the training thread
            self._error = exc

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            exc, self._error = self._error, None
            raise exc


def checkpoint_due(step: int, every: int, first: int = 10) -> bool:
    """Whether iteration ``step`` gets an intermediate checkpoint (iteration 0, the starting point,
    always gets one when checkpoints are on): every ``every`` iterations for
    the first ``first`` ones; after that the spacing doubles each time the run's length doubles
    (``first``/2 checkpoints per doubling), so a long run keeps O(log length) of them."""
    if every <= 0 or step <= 0 or step % every:
        return False
    q = step // every
    return q % 2 ** max(0, math.ceil(math.log2(q / first))) == 0


def replica_difference(model: nn.Module, device: torch.device) -> float:
    """The largest difference between the ranks' copies of a weight fingerprint (0 when the
    replicas are equal, as DistributedDataParallel keeps them)."""
    import torch.distributed as dist

    fp = torch.stack([p.detach().double().sum() for p in model.parameters()]).to(device)
    low, high = fp.clone(), fp.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    return float((high - low).abs().max())


def fit(task: TrainTask, settings: LoopSettings, device: torch.device, tracker=None,
        workdir: Path | None = None, resume_state: dict | None = None,
        save_checkpoint: Callable[[nn.Module, int], None] | None = None,
        on_epoch_end: list[Callable[[int, dict], None]] | None = None,
        already_logged_epoch: int = -1) -> FitResult:
    """Train ``task.model`` and return the best weights and the history.

    ``workdir`` receives ``last.pt`` (the resume state; see ``LoopSettings.resume_every_s``).
    ``save_checkpoint`` (model, iteration) is called every ``checkpoint_every`` iterations.  Epochs up to
    ``already_logged_epoch`` (those a killed run had logged) are not logged again on resume.
    """
    from tqdm import tqdm

    tracker = tracker or NullTracker()
    world = distributed.world()
    model = place_model(task.model, device)
    if world.active and settings.sync_bn:
        distributed.sync_batchnorm(model, device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameter")
    optimiser = torch.optim.Adam(params, lr=settings.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimiser, step_size=max(1, settings.lr_step),
                                                gamma=settings.lr_gamma)
    scaler = grad_scaler(device) if settings.amp else torch.amp.GradScaler(device.type, enabled=False)
    use_amp = settings.amp and device.type == "cuda"
    amp_context = (lambda: autocast(device)) if use_amp else contextlib.nullcontext

    start_epoch, step = 0, 0
    best_score = -math.inf if task.monitor_mode == "max" else math.inf
    best_epoch, bad_epochs = -1, 0
    best_state = _kept_state(task.best_network({}))
    if resume_state is not None:
        if int(resume_state.get("world_size", 1)) != world.size:
            raise ConfigError(f"the resume state was written by {resume_state.get('world_size', 1)} "
                              f"training process(es); resume it with as many (now {world.size})")
        model.load_state_dict(resume_state["model"])
        optimiser.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        scaler.load_state_dict(resume_state["scaler"])
        start_epoch, step = int(resume_state["epoch"]) + 1, int(resume_state["step"])
        best_score, best_epoch = float(resume_state["best_score"]), int(resume_state["best_epoch"])
        bad_epochs, best_state = int(resume_state["bad_epochs"]), resume_state["best_state"]
        torch.set_rng_state(resume_state["rng"])
        if torch.cuda.is_available() and resume_state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(resume_state["cuda_rng"])
        task.load_state(resume_state.get("task", {}))
        log.info("resuming at epoch %d (iteration %d, best %s=%.4f at epoch %d)", start_epoch, step,
                 task.monitor, best_score, best_epoch)

    history: list[dict] = list(resume_state.get("history", [])) if resume_state else []
    trained = distributed.data_parallel(model, device)  # DDP under torchrun, else model itself
    task.train_through(trained)
    bar = tqdm(range(start_epoch, settings.epochs), desc="train", unit="epoch",
               initial=start_epoch, total=settings.epochs,
               disable=not settings.progress or not world.is_main)
    writer = ResumeWriter(Path(workdir) / "last.pt") if workdir is not None else None
    stopped_early, reason = False, "max epochs"
    last_write = time.time()
    if save_checkpoint and settings.checkpoint_every > 0 and resume_state is None:
        save_checkpoint(model, 0)  # the starting point: SVCCA of any run, however short
    try:
        epoch = start_epoch - 1
        for epoch in bar:
            t0 = time.time()
            trained.train()
            total, n, extra_sums = 0.0, 0, {}
            for batch in task.batches(epoch):
                optimiser.zero_grad(set_to_none=True)
                with amp_context():
                    loss, extra = task.training_step(batch, step)
                scaler.scale(loss).backward()
                scaler.step(optimiser)
                scaler.update()
                step += 1
                task.after_step(step)
                total += loss.detach()
                n += 1
                for k, v in extra.items():  # summed on the device: one sync per epoch, not per step
                    extra_sums[k] = extra_sums.get(k, 0.0) + (v.detach() if torch.is_tensor(v) else v)
                if save_checkpoint and checkpoint_due(step, settings.checkpoint_every):
                    save_checkpoint(model, step)
            scheduler_lr = optimiser.param_groups[0]["lr"]
            scheduler.step()
            means = {"train_loss": total / max(n, 1),
                     **{k: v / max(n, 1) for k, v in extra_sums.items()}}
            metrics = {**distributed.average(means, device), "lr": scheduler_lr,  # over ranks
                       "train_seconds": time.time() - t0}
            if not math.isfinite(metrics["train_loss"]):
                raise TrainingDiverged(f"the training loss became {metrics['train_loss']} in epoch "
                                         f"{epoch}: lower lr or check the data")
            if world.is_main:  # validation on rank 0; every rank then decides alike
                metrics.update(task.validate(epoch))
                metrics["epoch_seconds"] = time.time() - t0
            metrics = distributed.broadcast(metrics)
            score = float(metrics.get(task.monitor, float("nan")))
            if _improved(score, best_score, task.monitor_mode):
                best_score, best_epoch, bad_epochs = score, epoch, 0
                best_state = _kept_state(task.best_network(metrics))
            else:
                bad_epochs += 1
            metrics[f"best_{task.monitor}"] = best_score
            history.append({"epoch": epoch, **metrics})
            if epoch > already_logged_epoch:
                tracker.log_metrics(metrics, step=epoch)
            bar.set_postfix(loss=f"{metrics['train_loss']:.4f}", **{task.monitor: f"{score:.4f}"})
            stop = ""
            try:
                for cb in on_epoch_end or ():
                    cb(epoch, metrics)
            except StopTraining as exc:
                stop = str(exc) or "stopped by callback"
            if not stop and settings.patience and bad_epochs >= settings.patience:
                stop = f"no improvement for {settings.patience} epochs"
            # the state after the first epoch, then at most every resume_every_s: not after the
            # last one — the run logs the trained model itself, and that write (~0.5 s for a
            # ResNet-34 + Adam) would be a per-run cost the size of a whole epoch on a GPU
            if writer is not None and (epoch == start_epoch or
                                       time.time() - last_write >= settings.resume_every_s):
                last_write = time.time()
                writer.submit(snapshot({
                    "model": model.state_dict(), "optimizer": optimiser.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                    "epoch": epoch, "step": step, "best_score": best_score, "best_epoch": best_epoch,
                    "bad_epochs": bad_epochs, "best_state": best_state, "rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                    "task": task.state(), "history": list(history), "world_size": world.size}))
            if stop:
                stopped_early, reason = True, stop
                break
    except BaseException:
        if writer is not None:  # the last state is on disk before the run uploads it
            with contextlib.suppress(Exception):
                writer.wait()
        raise
    finally:
        bar.close()
        task.train_through(None)
    if writer is not None:
        writer.wait()  # last.pt is complete before anyone reads it
    if world.active:  # DDP keeps the replicas equal: the run records that it did
        tracker.log_metrics({"replica_max_difference": replica_difference(model, device)})
    best_state = {k: v.cpu() for k, v in best_state.items()}  # the run's result, on the CPU
    return FitResult(best_score=best_score, best_epoch=best_epoch, epochs_run=epoch + 1,
                     stopped_early=stopped_early, best_state=best_state, history=history,
                     stop_reason=reason)

