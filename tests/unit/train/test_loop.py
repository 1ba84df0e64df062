"""The one training loop: it learns, it stops early, it checkpoints, and resuming from its state
gives the same weights as never stopping."""

from pathlib import Path

import numpy as np
import pytest
import torch

from covidseg.config import PreprocessConfig
from covidseg.data.restoration import GenesisDistort, in_painting, out_painting
from covidseg.data.splits import fold_split
from covidseg.data.store import PreprocessedDataset
from covidseg.models.factory import ModelSpec, build_model
from covidseg.stages.preprocess import preprocess_dataset
from covidseg.train.loop import LoopSettings, checkpoint_due, fit
from covidseg.train.losses import SegmentationLoss
from covidseg.train.tasks import SegmentationTask

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def small_ds():
    s = preprocess_dataset(PreprocessConfig(demo_labelled=8, demo_unlabelled=0, demo_noncovid=0,
                                            demo_size=64, demo_depth=24, test_cases=0, folds=4,
                                            demo_difficulty=0.3), progress=False)
    return PreprocessedDataset(Path(s["dataset_path"]))


def _task(ds, seed=0, **kw):
    torch.manual_seed(seed)
    train, val = fold_split(ds.splits, 0)
    model = build_model(ModelSpec("unet", "resnet18"))
    return SegmentationTask(model, ds, train, val, SegmentationLoss("ce+dice"), CPU, batch_size=8,
                            seed=seed, lesion_boost=3.0, **kw)


def test_checkpoints_thin_out_as_a_run_grows():
    due = [s for s in range(1, 16001) if checkpoint_due(s, 100)]
    assert due[:10] == list(range(100, 1001, 100))                  # the first ten: every 100
    assert due[10:15] == [1200, 1400, 1600, 1800, 2000]             # then 5 per doubling
    assert due[15:20] == [2400, 2800, 3200, 3600, 4000]
    assert len(due) == 10 + 5 * 4 and due[-1] == 16000
    assert not any(checkpoint_due(s, 0) for s in range(1, 500))     # 0: off


def test_an_epoch_is_iterations_per_epoch_steps_and_keep_last_keeps_the_final_weights(small_ds):
    """iterations_per_epoch=13: 13 optimiser steps an epoch whatever the slices (more than one pass
    here), the learning rate following warm-up + cosine step by step; keep=last returns the
    weights after the last step, not the best epoch's."""
    task = _task(small_ds, iterations=13)
    n_slices = len(task.train_set)
    assert task.steps_per_epoch() == 13 and 13 * 8 > n_slices
    steps, lrs = [], []
    original = task.training_step

    def counting(batch, step):
        steps.append(step)
        assert len(batch[0]) == 8
        return original(batch, step)

    task.training_step = counting
    settings = LoopSettings(epochs=2, patience=0, lr=1e-3, optimizer="adamw", schedule="cosine",
                            warmup=4, grad_clip=1.0, keep="last", progress=False)
    result = fit(task, settings, CPU, on_epoch_end=[lambda e, m: lrs.append(m["lr"])])
    assert steps == list(range(26))
    assert lrs == pytest.approx([1e-3 * 1 / 4, 1e-3 * 0.5 * (1 + np.cos(np.pi * 9 / 22))])
    assert result.best_epoch == 1
    final = task.model.state_dict()
    assert all(torch.equal(final[k].cpu(), v) for k, v in result.best_state.items())


def test_genesis_distortions_keep_shape_and_scale():
    rng = np.random.default_rng(0)
    image = rng.normal(0, 1, (64, 64)).astype(np.float32)
    image[:8] = 0  # background
    x, target = GenesisDistort()(image, np.random.default_rng(1))
    assert x.shape == target.shape == image.shape and x.dtype == np.float32
    assert np.isfinite(x).all() and np.abs(x).max() <= 3.0 + 1e-5
    np.testing.assert_allclose(target, np.clip(image, -3, 3))
    assert not np.allclose(x, target)
    base = np.full((32, 32), 0.5)
    inp = in_painting(base, np.random.default_rng(2))
    outp = out_painting(base, np.random.default_rng(3))
    assert 0 < (inp != 0.5).mean() < 1 and 0 < (outp == 0.5).mean() < 1


def test_persistent_workers_give_the_same_batches_as_the_main_process(small_ds):
    """Two epochs through one loader with 2 persistent workers = the same two epochs drawn in the
    main process: the epoch travels with each index, so workers need no restart or set_epoch, and
    each epoch is shuffled and augmented differently."""
    from covidseg.data.augment import SliceAugment

    def epochs(workers):
        task = _task(small_ds, workers=workers, augment=SliceAugment())
        assert task.batches(0) is task.batches(1)  # one loader serves every epoch
        return [[b[0].clone() for b in task.batches(e)] for e in (0, 1, 0)]

    main, pooled = epochs(0), epochs(2)
    for a, b in zip(main, pooled):
        assert len(a) == len(b) > 1
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(main[0][0], main[1][0])  # epoch 1 differs from epoch 0 …
    assert all(torch.equal(x, y) for x, y in zip(main[0], main[2]))  # … and epoch 0 is replayable
