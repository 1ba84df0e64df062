import pytest
import torch

from covidseg.base.errors import ConfigError
from covidseg.train.losses import LOSSES, SegmentationLoss, soft_dice_loss_prob


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
    got = soft_dice_loss_prob(torch.sigmoid(logits), g).item()
    assert got == pytest.approx(linear, abs=1e-6) and abs(got - squared) > 0.05


def test_batch_dice_hand_computed():
    """dice=batch (the default): one Dice over every pixel of the batch, ε = 1e-5."""
    p = torch.tensor([[[[0.9, 0.5]]], [[[0.2, 0.0]]]])  # two 1×2 images
    g = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 0.0]]]])  # the second lesion-free
    logits = torch.log(p.clamp(1e-6, 1 - 1e-6) / (1 - p).clamp(1e-6, 1 - 1e-6))
    inter, card = 0.9, (0.9 + 0.5 + 0.2 + 0.0) + 1.0
    want = 1 - (2 * inter + 1e-5) / (card + 1e-5)  # 0.3077
    got = SegmentationLoss("dice")(logits, g).item()
    assert got == pytest.approx(want, abs=1e-5)
    # per sample (the thesis): mean of 1 - (2·0.9+1)/(1.4+1+1) and 1 - 1/(0.2+1)
    sample = ((1 - 2.8 / 3.4) + (1 - 1 / 1.2)) / 2
    assert SegmentationLoss("dice", dice="sample")(logits, g).item() == pytest.approx(sample,
                                                                                    abs=1e-5)
    # ce+dice adds the mean binary cross-entropy
    ce = torch.nn.functional.binary_cross_entropy_with_logits(logits, g).item()
    assert SegmentationLoss("ce+dice")(logits, g).item() == pytest.approx(want + ce, abs=1e-5)
    # a sample weight of 0 removes that image's pixels from the sums
    w = torch.tensor([1.0, 0.0])
    only_first = 1 - (2 * 0.9 + 1e-5) / (1.4 + 1.0 + 1e-5)
    assert SegmentationLoss("dice")(logits, g, w).item() == pytest.approx(only_first, abs=1e-5)
    # a pixel weight of 0 removes that pixel
    pw = torch.ones_like(g)
    pw[0, 0, 0, 1] = 0
    no_half = 1 - (2 * 0.9 + 1e-5) / (0.9 + 0.2 + 1.0 + 1e-5)
    assert SegmentationLoss("dice")(logits, g, pw).item() == pytest.approx(no_half, abs=1e-5)


def test_batch_dice_does_not_punish_a_lesion_free_slice_like_a_whole_sample():
    """The hedging the per-sample form teaches: a little probability on a lesion-free slice
    costs that sample's whole Dice (about 0.5 of the batch loss); in the batch form only its
    share of the denominator."""
    g = torch.zeros(2, 1, 16, 16)
    g[0, 0, 4:12, 4:12] = 1  # 64 lesion pixels in the first slice, none in the second
    logits = (g * 2 - 1) * 8
    logits[1, 0, 0, :4] = 0.0  # p = 0.5 on 4 pixels of the lesion-free slice
    batch = SegmentationLoss("dice")(logits, g).item()
    sample = SegmentationLoss("dice", dice="sample")(logits, g).item()
    assert batch < 0.02 and sample > 0.2


def test_unknown_dice_mode():
    with pytest.raises(ConfigError, match="dice='pixel' is not one of"):
        SegmentationLoss("dice", dice="pixel")
