"""Data parallelism: the shards of a global batch, and two gloo processes running the real loop
under DistributedDataParallel giving the weights of one process with the same global batch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from covidseg.base.errors import ConfigError
from covidseg.train import distributed
from covidseg.train.distributed import World, shard

CPU = torch.device("cpu")


def test_ranks_split_each_global_batch_like_one_process():
    order = [7, 3, 9, 0, 5, 1, 8, 2, 6, 4]
    r0, r1 = (shard(order, 2, World(rank=r, size=2)) for r in (0, 1))
    assert r0 == [7, 3, 5, 1] and r1 == [9, 0, 8, 2]  # global batches [7 3 9 0], [5 1 8 2]
    # batch k of the single process with batch 4 = rank 0's batch k + rank 1's batch k
    single = order[:8]
    for k in range(2):
        assert r0[2 * k:2 * k + 2] + r1[2 * k:2 * k + 2] == single[4 * k:4 * k + 4]
    # a set smaller than one global batch is repeated, so that every rank has a batch
    assert shard([4, 2, 1], 2, World(rank=1, size=2)) == [1, 4]
    assert shard([], 2, World(rank=0, size=2)) == []
    assert shard(order, 2, World()) == order  # one process: as is


def test_sync_bn_on_the_cpu_is_refused_with_a_reason():
    with pytest.raises(ConfigError, match="needs CUDA"):
        distributed.sync_batchnorm(nn.BatchNorm2d(2), CPU)


def test_a_single_process_needs_no_process_group(monkeypatch):
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    w = distributed.setup("cpu")
    assert w == World() and not w.active and w.is_main
    assert distributed.broadcast({"a": 1}) == {"a": 1}
    assert distributed.average({"x": torch.tensor(2.0)}, CPU) == {"x": 2.0}
