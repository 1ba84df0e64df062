"""The one training loop: it learns, it stops early, it checkpoints, and resuming from its state
gives the same weights as never stopping."""

import numpy as np
import pytest
import torch

from covidseg.models.factory import ModelSpec, build_model
from covidseg.train.loop import LoopSettings, fit
from covidseg.train.resume import load_resume_state
from covidseg.train.tasks import RestorationTask, volume_dice
from tests.unit.train import test_loop as unit
from tests.unit.train.test_loop import CPU, _task

small_ds = unit.small_ds  # the unit tests' fixture, shared


@pytest.mark.e2e  # 12 epochs of real training: the slowest unit of the suite
def test_the_loop_learns(small_ds):
    task = _task(small_ds)
    untrained = volume_dice(task.model, small_ds, task.val_ids, CPU)
    result = fit(task, LoopSettings(epochs=12, patience=0, lr=1e-3, progress=False), CPU)
    assert len(result.history) == 12 and result.epochs_run == 12
    assert result.history[-1]["train_loss"] < 0.75 * result.history[0]["train_loss"]
    assert result.best_score > max(0.25, untrained + 0.2), (untrained, result.best_score)
    # the kept weights are those of the best epoch
    task.model.load_state_dict(result.best_state)
    assert volume_dice(task.model, small_ds, task.val_ids, CPU) == pytest.approx(result.best_score)


@pytest.mark.e2e  # trains until the patience runs out
def test_early_stop_and_intermediate_checkpoints(small_ds):
    task = _task(small_ds)
    saved = []
    result = fit(task, LoopSettings(epochs=10, patience=2, lr=0.0, checkpoint_every=4,
                                    progress=False), CPU,
                 save_checkpoint=lambda model, step: saved.append(step))
    # lr 0: only batch-norm statistics move; training stops `patience` epochs after the best
    assert result.stopped_early and "no improvement for 2 epochs" in result.stop_reason
    assert result.epochs_run == result.best_epoch + 1 + 2 < 10
    steps_per_epoch = len(task.batches(0))
    # the starting point (iteration 0), then every 4 (fewer than 10 of them: no thinning yet)
    assert saved == [s for s in range(0, result.epochs_run * steps_per_epoch + 1) if s % 4 == 0]


@pytest.mark.e2e  # 10 epochs of real training
def test_resume_gives_the_weights_of_an_uninterrupted_run(small_ds, tmp_path):
    """With the default recipe's loop (AdamW, warm-up + cosine per iteration, clipping, a fixed
    number of iterations an epoch, the last weights)."""
    recipe = {"optimizer": "adamw", "weight_decay": 1e-4, "schedule": "cosine", "warmup": 3,
              "grad_clip": 12.0, "keep": "last"}
    settings = LoopSettings(epochs=4, patience=0, lr=1e-3, progress=False, **recipe)
    straight = fit(_task(small_ds, augment=None, iterations=3), settings, CPU,
                   workdir=tmp_path / "a")
    first = fit(_task(small_ds, iterations=3),
                LoopSettings(epochs=4, patience=0, lr=1e-3, progress=False, **recipe), CPU,
                workdir=tmp_path / "b", on_epoch_end=[_stop_after(1)])
    assert [h["epoch"] for h in first.history] == [0, 1]
    state = load_resume_state(tmp_path / "b" / "last.pt")
    assert state["epoch"] == 0  # written after the first epoch (then at most once a minute)
    resumed_task = _task(small_ds, seed=0, iterations=3)
    with torch.no_grad():  # start from different weights: the state must overwrite them
        for p in resumed_task.model.parameters():
            p.add_(1.0)
    second = fit(resumed_task, settings, CPU, workdir=tmp_path / "b", resume_state=state)
    assert [h["epoch"] for h in second.history] == [0, 1, 2, 3]  # the whole run's history
    a = straight.history[-1]
    b = second.history[-1]
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
    for k, v in straight.best_state.items():
        assert torch.allclose(v.float(), second.best_state[k].float(), atol=1e-5), k


@pytest.mark.e2e  # two epochs of restoration training
def test_restoration_task_runs_and_validates(small_ds):
    ids = small_ds.ids()
    torch.manual_seed(0)
    model = build_model(ModelSpec("unet", "resnet18"))
    task = RestorationTask(model, small_ds, ids[:-2], ids[-2:], CPU, batch_size=8, val_slices=16)
    result = fit(task, LoopSettings(epochs=2, patience=0, lr=1e-3, progress=False), CPU)
    assert task.monitor == "val_restoration_mse" and task.monitor_mode == "min"
    assert all(np.isfinite(h["val_restoration_mse"]) for h in result.history)
    assert result.best_score == min(h["val_restoration_mse"] for h in result.history)


def _stop_after(epoch: int):
    """An on_epoch_end callback that ends the run after ``epoch`` (a run killed there)."""
    from covidseg.train.loop import StopTraining

    def stop(e, metrics):
        if e >= epoch:
            raise StopTraining("killed")
    return stop




