"""Data-parallel training under ``torchrun`` (PyTorch's own launcher; nothing home-made).

``torchrun --nproc_per_node=N -m covidseg finetune …`` (also ``pretrain`` and ``meanteacher``)
starts N processes with ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set.  Each joins one process group
(NCCL on CUDA, gloo on the CPU) and trains a replica wrapped in ``DistributedDataParallel``:

* every rank draws the same global epoch order (seeded by seed and epoch) and takes its own
  slice of each global batch (:func:`shard`): the global batch is ``world_size × batch_size``
  and is exactly the batch a single process with that batch size would see;
* gradients are averaged by DDP; batch Dice sums its terms over the global batch
  (:func:`global_sum`), so the loss is the single process's too; the epoch's training loss
  and the task's extra logs are averaged over ranks (one reduction per epoch);
* validation, checkpoints, the resume state and the final evaluation run on rank 0; its
  metrics are broadcast, so every rank takes the same best-epoch and early-stop decisions;
* exactly one MLflow run per job: rank 0 starts and logs it, the other ranks get a null tracker
  that knows the run id (for the local work folder) and never talk to the server.

A single process (no ``WORLD_SIZE``, or 1) takes none of these paths.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

# the entry points that train data-parallel
DATA_PARALLEL = ("pretrain", "finetune", "meanteacher")


@dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` of ``size`` processes, ``local_rank`` on its
    machine (its GPU), ``local_size`` processes on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


_world = World()


def world() -> World:
    """The current process's :class:`World` (one process unless :func:`setup` joined a group)."""
    return _world


def from_environment(env=None) -> World:
    """The world ``torchrun`` describes in the environment (a single process without it)."""
    env = os.environ if env is None else env
    size = int(env.get("WORLD_SIZE", "1") or 1)
    return World(rank=int(env.get("RANK", "0") or 0), size=size,
                 local_rank=int(env.get("LOCAL_RANK", "0") or 0),
                 local_size=int(env.get("LOCAL_WORLD_SIZE", str(size)) or size))


def setup(device: str = "auto") -> World:
    """Join the process group ``torchrun`` prepared (NCCL when this rank trains on CUDA, else
    gloo); a no-op for a single process.  Returns the world."""
    global _world
    w = from_environment()
    if w.active and not dist.is_initialized():
        cuda = torch.cuda.is_available() and device in ("auto", "cuda") or device.startswith("cuda")
        if cuda:
            torch.cuda.set_device(w.local_rank)
        dist.init_process_group("nccl" if cuda else "gloo")
    _world = w
    return w


def teardown() -> None:
    global _world
    if dist.is_initialized():
        dist.destroy_process_group()
    _world = World()


def broadcast(obj):
    """Rank 0's ``obj`` on every rank (picklable objects; tensors travel on the CPU)."""
    if not _world.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if _world.active:
        dist.barrier()


def from_main(resolve):
    """``resolve()`` run by rank 0 alone — it may ask the tracking server, download, preprocess —
    and its (picklable) result sent to every rank: the other ranks never talk to the server.  A
    dataset in the result must lie where every rank can read it (one machine, or, across
    machines, ``COVIDSEG_CACHE``/``data=`` on shared storage).  If rank 0 fails, torchrun stops
    the others."""
    result = resolve() if _world.is_main else None
    result = broadcast(result)
    if not _world.is_main:
        for item in result if isinstance(result, tuple) else (result,):
            root = getattr(item, "root", None)
            if root is not None and not Path(root).exists():
                from covidseg.base.errors import ConfigError

                raise ConfigError(f"rank {_world.rank} on {socket.gethostname()} cannot read the "
                                  f"dataset at {root}: across machines put COVIDSEG_CACHE (or "
                                  "data=) on storage every machine shares")
    return result


def average(values: dict[str, torch.Tensor | float], device: torch.device) -> dict[str, float]:
    """The mean over ranks of each value (one all-reduce for the whole dict)."""
    if not values:
        return {}
    keys = sorted(values)
    t = torch.stack([torch.as_tensor(values[k], dtype=torch.float64, device=device).detach()
                     .reshape(()) for k in keys])
    if _world.active:
        dist.all_reduce(t)
        t /= _world.size
    return dict(zip(keys, t.tolist()))


def global_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over the ranks while training, the gradient flowing back to every rank's own
    part (``torch.distributed.nn.functional.all_reduce``): a batch statistic that does not split
    into a mean of per-rank terms — the sums of batch Dice — is then the global batch's, and the
    gradients DDP averages are the single process's.  As is in one process and without grad
    (validation runs on rank 0 alone)."""
    if not _world.active or not torch.is_grad_enabled():
        return t
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(t)


def shard(order: list[int], batch_size: int, w: World | None = None) -> list[int]:
    """This rank's part of a global epoch ``order``: the global batches of ``size × batch_size``
    items (the last incomplete one dropped when there is at least one full batch; a set smaller
    than one global batch is repeated to fill it), and of each, this rank's ``batch_size`` items.
    Every rank gets the same number of batches (DDP needs it); for one process ``order`` as is."""
    w = w or _world
    if not w.active:
        return list(order)
    glob = batch_size * w.size
    if not order:
        return []
    if len(order) < glob:
        order = (order * (glob // len(order) + 1))[:glob]
    usable = len(order) // glob * glob
    return [order[i] for i in range(usable) if (i % glob) // batch_size == w.rank]


def data_parallel(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` wrapped in ``DistributedDataParallel`` (its parameters are broadcast from rank 0
    now), or ``model`` itself for a single process."""
    if not _world.active:
        return model
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)


def sync_batchnorm(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """BatchNorm layers computing their statistics over the global batch (PyTorch's
    ``SyncBatchNorm`` runs on CUDA only)."""
    from covidseg.base.errors import ConfigError

    if device.type != "cuda":
        raise ConfigError("sync_bn=true needs CUDA: PyTorch's SyncBatchNorm does not run on the "
                          "CPU (leave sync_bn=false: each rank normalises over its own batch)")
    _convert_norms(model)
    return model


def _convert_norms(module: torch.nn.Module) -> None:
    """Replace, in place, the trainable BatchNorm layers below ``module`` by SyncBatchNorm ones
    sharing their parameters and statistics; a frozen layer pinned to eval mode (transfer
    strategies) keeps its pin and its class, since it normalises with fixed statistics anyway."""
    for name, child in module.named_children():
        if isinstance(child, torch.nn.modules.batchnorm._BatchNorm):
            if "train" not in vars(child):  # not pinned to eval mode
                setattr(module, name, torch.nn.SyncBatchNorm.convert_sync_batchnorm(child))
        else:
            _convert_norms(child)
