"""The optimiser and the per-iteration learning-rate schedule (covidseg.train.optim), and that
the loop takes ``iterations_per_epoch`` steps an epoch whatever the number of slices."""

import math

import pytest
import torch

from covidseg.train.optim import lr_factor, make_optimizer, make_scheduler


def test_schedule_values_at_given_steps():
    total, warm = 1000, 100
    assert lr_factor(0, "cosine", total, warm) == pytest.approx(1 / 100)
    assert lr_factor(49, "cosine", total, warm) == pytest.approx(50 / 100)
    assert lr_factor(100, "cosine", total, warm) == pytest.approx(1.0)
    assert lr_factor(550, "cosine", total, warm) == pytest.approx(0.5)  # halfway after warm-up
    assert lr_factor(1000, "cosine", total, warm) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(325, "cosine", total, warm) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 0.25)))
    assert lr_factor(0, "poly", total) == pytest.approx(1.0)
    assert lr_factor(500, "poly", total) == pytest.approx(0.5 ** 0.9)
    assert lr_factor(1000, "poly", total) == pytest.approx(0.0)
    # the thesis: ×0.8 every 25 epochs of 10 iterations
    assert lr_factor(249, "step", total, 0, 10, 25, 0.8) == pytest.approx(1.0)
    assert lr_factor(250, "step", total, 0, 10, 25, 0.8) == pytest.approx(0.8)
    assert lr_factor(760, "step", total, 0, 10, 25, 0.8) == pytest.approx(0.8 ** 3)
    with pytest.raises(ValueError, match="schedule='linear'"):
        lr_factor(0, "linear", total)


def test_scheduler_sets_the_optimiser_lr_each_iteration():
    w = torch.nn.Parameter(torch.zeros(3))
    opt = make_optimizer([w], "adamw", 1e-2, 1e-4)
    sched = make_scheduler(opt, "cosine", total=20, warmup=4)
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    want = [1e-2 * lr_factor(s, "cosine", 20, 4) for s in range(20)]
    assert seen == pytest.approx(want)
    assert isinstance(make_optimizer([w], "sgd", 0.1), torch.optim.SGD)
    assert make_optimizer([w], "sgd", 0.1).param_groups[0]["nesterov"]
    assert isinstance(make_optimizer([w], "adam", 0.1), torch.optim.Adam)
    with pytest.raises(ValueError, match="optimizer='rmsprop'"):
        make_optimizer([w], "rmsprop", 0.1)
