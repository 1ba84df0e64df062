import pytest
import torch

from covidseg.errors import ConfigError
from covidseg.train.losses import LOSSES, SegmentationLoss, soft_dice_loss


def _target():
    t = torch.zeros(2, 1, 32, 32)
    t[0, 0, 8:20, 8:20] = 1
    t[1, 0, 4:10, 20:30] = 1
    return t


@pytest.mark.parametrize("name", LOSSES)
def test_losses_prefer_the_right_answer_and_have_gradients(name):
    t = _target()
    loss = SegmentationLoss(name)
    good = (t * 2 - 1) * 8  # confident and right
    bad = -good
    assert loss(good, t) < loss(bad, t)
    logits = torch.zeros_like(t, requires_grad=True)
    loss(logits, t).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_soft_targets_and_sample_weights():
    t = _target()
    soft = t * 0.7
    loss = SegmentationLoss("ce+dice")
    logits = torch.randn_like(t)
    assert torch.isfinite(loss(logits, soft))
    w = torch.tensor([1.0, 0.0])  # the second sample carries no weight
    assert loss(logits, t, w) == pytest.approx(float(loss(logits[:1], t[:1])), rel=1e-5)


def test_class_weight_raises_the_cost_of_missed_lesions():
    t = _target()
    logits = torch.full_like(t, -3.0)  # predicts background everywhere
    assert SegmentationLoss("ce", pos_weight=5.0)(logits, t) > SegmentationLoss("ce")(logits, t)


def test_unknown_loss():
    with pytest.raises(ConfigError, match="loss='focal' is not one of"):
        SegmentationLoss("focal")


def test_dice_denominator_is_p_plus_g_not_squared():
    """Chosen and documented in covidseg.train.losses: Σp + Σg (the soft 2TP/(2TP+FP+FN))."""
    p = torch.tensor([[0.9, 0.5, 0.2, 0.5]])
    g = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    logits = torch.log(p / (1 - p))
    linear = 1 - (2 * (0.9 + 0.5) + 1) / ((0.9 + 0.5 + 0.2 + 0.5) + 2 + 1)       # 0.2
    squared = 1 - (2 * (0.9 + 0.5) + 1) / ((0.81 + 0.25 + 0.04 + 0.25) + 2 + 1)  # 0.126…
    got = soft_dice_loss(logits, g).item()
    assert got == pytest.approx(linear, abs=1e-6) and abs(got - squared) > 0.05
