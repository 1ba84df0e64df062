"""Optimiser and learning-rate schedule of the one training loop, counted in iterations.

A run trains ``epochs × iterations_per_epoch`` optimiser steps (an "epoch" is a fixed number of
steps between two validations, not a pass over a small labelled set: 40 slices in batches of 8
would make 5 steps an epoch).  The learning rate at iteration ``s`` (0-based, the step about to be
taken) is ``lr × factor(s)``:

* a linear warm-up over the first ``warmup`` iterations (at most a fifth of the run):
  ``(s + 1) / warmup``;
* then, with ``t = (s - warmup) / (total - warmup)`` running from 0 to 1 over the rest:

  - ``cosine``: ``½ (1 + cos πt)`` (SGDR without restarts; nnU-Net's newer AdamW presets);
  - ``poly``: ``(1 - t)^0.9`` (nnU-Net's default with SGD);
  - ``step``: ``lr_gamma ^ ⌊epoch / lr_step⌋`` with ``epoch = ⌊s / iterations_per_epoch⌋``
    (the thesis's StepLR, ×0.8 every 25 epochs; no warm-up unless asked).

Optimisers (:data:`OPTIMIZERS`): ``adamw`` (decoupled weight decay), ``sgd`` (Nesterov, momentum
0.99 as nnU-Net), ``adam`` (the thesis; ``weight_decay`` then is L2 in the gradient, as torch's
Adam does).  The schedule is a :class:`torch.optim.lr_scheduler.LambdaLR` stepped after every
optimiser step, so its ``state_dict`` (the iteration count) is part of the resume state.
"""

from __future__ import annotations

import math

import torch

OPTIMIZERS = ("adamw", "sgd", "adam")
SCHEDULES = ("cosine", "poly", "step")
SGD_MOMENTUM = 0.99


def make_optimizer(params, name: str, lr: float, weight_decay: float = 0.0):
    """The optimiser ``name`` over ``params``."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=SGD_MOMENTUM, nesterov=True,
                               weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer={name!r} is not one of {', '.join(OPTIMIZERS)}")


def lr_factor(step: int, schedule: str, total: int, warmup: int = 0,
              iterations_per_epoch: int = 1, lr_step: int = 25, lr_gamma: float = 0.8) -> float:
    """The learning rate at iteration ``step`` as a fraction of the peak ``lr`` (see the module
    docstring); ``total`` = the run's iterations."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "step":
        epoch = step // max(1, iterations_per_epoch)
        return lr_gamma ** (epoch // max(1, lr_step))
    t = min(1.0, max(0.0, (step - warmup) / max(1, total - warmup)))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule == "poly":
        return (1.0 - t) ** 0.9
    raise ValueError(f"schedule={schedule!r} is not one of {', '.join(SCHEDULES)}")


def make_scheduler(optimiser, schedule: str, total: int, warmup: int = 0,
                   iterations_per_epoch: int = 1, lr_step: int = 25, lr_gamma: float = 0.8):
    """A per-iteration :class:`~torch.optim.lr_scheduler.LambdaLR` of :func:`lr_factor`."""
    lr_factor(0, schedule, total)  # an unknown schedule fails here, not at the first step
    warmup = min(int(warmup), total // 5)  # a short run still reaches its peak and decays

    def factor(step: int) -> float:
        return lr_factor(step, schedule, total, warmup, iterations_per_epoch, lr_step, lr_gamma)

    return torch.optim.lr_scheduler.LambdaLR(optimiser, factor)
