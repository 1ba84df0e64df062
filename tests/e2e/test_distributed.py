"""Data parallelism: the shards of a global batch, and two gloo processes running the real loop
under DistributedDataParallel giving the weights of one process with the same global batch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from covidseg.config import PreprocessConfig
from covidseg.data.splits import fold_split
from covidseg.data.store import PreprocessedDataset
from covidseg.stages.preprocess import preprocess_dataset
from covidseg.train import distributed
from covidseg.train.loop import LoopSettings, fit
from covidseg.train.losses import SegmentationLoss
from covidseg.train.tasks import SegmentationTask
from tests.unit.train.test_distributed import CPU


def _dataset() -> PreprocessedDataset:
    s = preprocess_dataset(PreprocessConfig(demo_labelled=6, demo_unlabelled=0, demo_noncovid=0,
                                            demo_size=64, demo_depth=24, test_cases=0, folds=3),
                           progress=False)
    return PreprocessedDataset(Path(s["dataset_path"]))


class NoBatchStatistics(nn.Module):
    """A small network whose output for a slice does not depend on the other slices of its
    batch (no BatchNorm): one process and two ranks can then agree to rounding."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 1))

    def forward(self, x):
        return self.net(x)


def _train(ds, batch_size: int) -> tuple[dict, float]:
    torch.manual_seed(0)
    train, val = fold_split(ds.splits, 0)
    task = SegmentationTask(NoBatchStatistics(), ds, train, val, SegmentationLoss("ce+dice"), CPU,
                            batch_size=batch_size, seed=3)
    result = fit(task, LoopSettings(epochs=1, patience=0, lr=1e-2, progress=False), CPU)
    return ({k: v.clone() for k, v in task.model.state_dict().items()},
            result.history[0]["train_loss"])


def _rank(rank: int, port: int, root: str, out: str, cache: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                      COVIDSEG_CACHE=cache)
    torch.set_num_threads(1)
    distributed.setup("cpu")
    try:
        weights, loss = _train(PreprocessedDataset(Path(root)), batch_size=2)
        torch.save({"weights": weights, "loss": loss}, Path(out) / f"rank{rank}.pt")
    finally:
        distributed.teardown()


@pytest.mark.e2e  # two processes, a process group, a dataset: ~15 s
def test_two_ranks_give_the_weights_of_one_process_with_the_global_batch(tmp_path):
    from tests.conftest import free_port

    ds = _dataset()
    single, single_loss = _train(ds, batch_size=4)
    mp.start_processes(_rank, args=(free_port(), str(ds.root), str(tmp_path),
                                    os.environ["COVIDSEG_CACHE"]),
                       nprocs=2, join=True, start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for name, w in single.items():
        assert not torch.equal(w, _initial()[name])  # the epoch moved the weights
        for r in ranks:  # every replica = the single process, to float rounding
            torch.testing.assert_close(r["weights"][name], w, rtol=1e-4, atol=1e-5)
    # the logged epoch loss is the mean over the ranks = the single process's mean
    assert ranks[0]["loss"] == pytest.approx(single_loss, rel=1e-5)
    assert ranks[1]["loss"] == pytest.approx(single_loss, rel=1e-5)


def _initial() -> dict:
    torch.manual_seed(0)
    return NoBatchStatistics().state_dict()




