"""The semi-supervised methods' parts (issue 24): one forward pass for every student input, the
cut-out and CutMix targets, confidence masks, the fine-tuned run's split enforced, and a starting
model that training only makes worse kept."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from covidseg.base.errors import ConfigError
from covidseg.config import PreprocessConfig
from covidseg.data.slices import SliceDataset
from covidseg.data.splits import fold_split
from covidseg.data.store import PreprocessedDataset
from covidseg.models.factory import ModelSpec, build_model
from covidseg.semi.teacher import MeanTeacherTask, UniMatchTask
from covidseg.semi.views import confident_targets, cutmix, forward_together, strong_view
from covidseg.stages.preprocess import preprocess_dataset
from covidseg.train.loop import LoopSettings, fit
from covidseg.train.losses import SegmentationLoss
from covidseg.train.supervised import check_same_split, trained_split
from covidseg.train.tasks import SegmentationTask

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def semi_ds():
    s = preprocess_dataset(PreprocessConfig(demo_labelled=6, demo_unlabelled=2, demo_noncovid=0,
                                            demo_size=64, demo_depth=12, test_cases=0, folds=3,
                                            demo_difficulty=0.3), progress=False)
    return PreprocessedDataset(Path(s["dataset_path"]))


class _Counted(nn.Module):
    """A small network with batch norm that counts its forward passes and the rows of each."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4, momentum=1.0)  # running stats = the last batch's
        self.head = nn.Conv2d(4, 1, 1)
        self.rows = []

    def forward(self, x):
        self.rows.append(len(x))
        return self.head(torch.relu(self.bn(self.conv(x))))


def test_every_student_input_of_a_size_goes_through_one_pass():
    torch.manual_seed(0)
    net = _Counted().train()
    a, b, c = torch.randn(2, 1, 16, 16), torch.randn(3, 1, 16, 16), torch.randn(0, 1, 16, 16)
    other = torch.randn(1, 1, 8, 8)
    outs = forward_together(net, [a, b, c, other])
    assert net.rows == [5, 1]  # a and b together, the other size on its own, the empty part none
    assert outs[2] is None and [o.shape[0] for o in (outs[0], outs[1], outs[3])] == [2, 3, 1]
    # the batch-norm statistics are those of one batch of a and b (then the small one's)
    net2 = _Counted().train()
    net2.load_state_dict(net.state_dict())
    net2(torch.cat([a, b]))
    features = net.conv(torch.cat([a, b]))
    assert torch.allclose(net2.bn.running_mean, features.mean(dim=(0, 2, 3)), atol=1e-6)
    # and the outputs are the network's on those inputs in one batch
    net2.bn.momentum = 0.0  # leave the statistics alone from here
    ref = net2(torch.cat([a, b]))
    assert torch.allclose(torch.cat([outs[0], outs[1]]), ref, atol=1e-6)


def _teacher_task(ds, cls=MeanTeacherTask, **kw):
    torch.manual_seed(0)
    train, val = fold_split(ds.splits, 0)
    unlabelled = SliceDataset(ds, ds.splits.unlabelled, seed=1, require_mask=False,
                              oracle=True)  # the phantoms' truth: scored, never trained on
    return cls(build_model(ModelSpec("unet", "resnet18")), ds, train, val,
               SegmentationLoss("ce+dice"), CPU, batch_size=4, seed=0, pseudo=None,
               unlabelled=unlabelled, ema_alpha=0.99, consistency_weight=1.0, rampup_epochs=0,
               iterations=2, **kw)


@pytest.mark.parametrize("cls", [MeanTeacherTask, UniMatchTask])
def test_a_training_step_is_one_forward_pass_of_the_student(semi_ds, cls):
    # an untrained teacher is sure of nothing: unimatch's confidence 0.5 makes every pixel count
    task = _teacher_task(semi_ds, cls, **({"confidence": 0.5} if cls is UniMatchTask else {}))
    calls = []
    task.model.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    batch = next(iter(task.batches(0)))
    loss, logs = task.training_step(batch, 0)
    # labelled 4 + (meanteacher: one strong view | unimatch: two strong views + the weak view)
    assert calls == [4 + 4 * (1 if cls is MeanTeacherTask else 3)]
    assert torch.isfinite(loss) and float(logs["loss_consistency"]) > 0
    if cls is UniMatchTask:
        shares = float(logs["confident_lesion_share"]) + float(logs["confident_background_share"])
        assert shares == pytest.approx(1.0)
        # every pixel is a target here: precision = the share of pixels the teacher gets right
        assert 0 <= float(logs["oracle_confident_precision"]) <= 1
        assert 0 <= float(logs["oracle_confident_recall"]) <= 1


def test_the_cut_out_square_carries_no_target():
    torch.manual_seed(1)
    u = torch.ones(3, 1, 32, 32)
    strong, kept = strong_view(u, noise=0.0, contrast=0.0, with_kept=True)
    assert ((strong == 0) == (kept == 0)).all() and (kept == 0).any()
    task = MeanTeacherTask.__new__(MeanTeacherTask)
    logits = torch.zeros(3, 1, 32, 32)  # p = 0.5 everywhere
    target = torch.full_like(logits, 0.5)
    inside = target.clone()
    inside[kept == 0] = 1.0  # whatever the teacher says under the square does not count
    a, _ = task.unlabelled_loss([logits], {"target": target, "kept": kept})
    b, _ = task.unlabelled_loss([logits], {"target": inside, "kept": kept})
    assert float(a) == float(b) == 0.0


def test_cutmix_mixes_targets_and_masks_exactly_as_the_images():
    torch.manual_seed(2)
    n = 5
    images = torch.arange(n, dtype=torch.float32)[:, None, None, None].expand(n, 1, 24, 24)
    targets, masks = 10 * images, 100 * images
    mixed, t, m = cutmix(images.clone(), targets.clone(), masks.clone())
    assert torch.equal(t, 10 * mixed) and torch.equal(m, 100 * mixed)
    partner = (torch.arange(n) + 1) % n
    for i in range(n):  # each image holds itself and one box of its partner
        values = set(mixed[i].unique().tolist())
        assert values == {float(i), float(partner[i])}


def test_confidence_masks_keep_lesion_and_background_apart():
    prob = torch.tensor([[[[0.99, 0.96, 0.9, 0.6], [0.4, 0.1, 0.04, 0.01]]]])
    target, confident = confident_targets(prob, 0.95)
    assert target.flatten().tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert confident.flatten().tolist() == [1, 1, 0, 0, 0, 0, 1, 1]
    task = UniMatchTask.__new__(UniMatchTask)
    task.loss = SegmentationLoss("ce+dice")
    logits = torch.zeros(2, 1, 2, 4)
    pairs = [(target.expand(2, 1, 2, 4), confident.expand(2, 1, 2, 4))] * 2
    _, logs = task.unlabelled_loss([logits, logits], {
        "pairs": pairs, "target": target, "confident": confident, "perturb": False})
    assert float(logs["confident_lesion_share"]) == pytest.approx(2 / 8)
    assert float(logs["confident_background_share"]) == pytest.approx(2 / 8)


def test_a_model_trained_on_another_split_is_refused(semi_ds):
    def config(**training):
        base = {"fold": "0", "regime": "standard", "train_cases": "0", "seed": "0", "cv": "0"}
        return {"dataset_key": semi_ds.key, "training": {**base, **training}}

    train, val = fold_split(semi_ds.splits, 0)
    check_same_split(semi_ds, config(), "run-a", train, val)  # the same fold
    check_same_split(semi_ds, config(regime="40-10"), "run-a", train, val)  # its alias
    check_same_split(semi_ds, config(seed="5"), "run-a", train, val)  # seed: same cases
    with pytest.raises(ConfigError, match="run-a was trained on another split .*fold=1"):
        check_same_split(semi_ds, config(fold="1"), "run-a", train, val)
    with pytest.raises(ConfigError, match="another split"):
        check_same_split(semi_ds, config(train_cases="1"), "run-a", train, val)
    # another dataset, or no fold recorded: nothing to compare
    assert trained_split(semi_ds, {"dataset_key": "other", "training": {"fold": "1"}}) is None
    assert trained_split(semi_ds, {"dataset_key": semi_ds.key, "training": {}}) is None


class _Worsening(SegmentationTask):
    """Validation scores scripted to fall from the starting model on: training only hurts."""

    scores = [0.9, 0.5, 0.4]

    def validate(self, epoch: int) -> dict:
        return {"val_volume_dice": self.scores[epoch + 1]}


@pytest.mark.parametrize("keep", ["last", "best"])
def test_the_starting_model_is_kept_when_no_epoch_beats_it(semi_ds, keep):
    torch.manual_seed(0)
    train, val = fold_split(semi_ds.splits, 0)
    task = _Worsening(_Counted(), semi_ds, train, val,
                      SegmentationLoss("ce+dice"), CPU, batch_size=4, iterations=1)
    start = {k: v.clone() for k, v in task.model.state_dict().items()}
    result = fit(task, LoopSettings(epochs=2, patience=0, lr=1e-2, keep=keep, score_start=True,
                                    progress=False, amp=False), CPU)
    assert result.best_epoch == -1 and result.best_score == pytest.approx(0.9)
    assert "starting model" in result.stop_reason
    assert all(torch.equal(result.best_state[k], v) for k, v in start.items())
    moved = task.model.state_dict()
    assert any(not torch.equal(moved[k], v) for k, v in start.items())  # training did happen
    # without score_start the last (keep=last) or best epoch's weights are the model
    torch.manual_seed(0)
    task.model.load_state_dict(start)
    plain = fit(task, LoopSettings(epochs=2, patience=0, lr=1e-2, keep=keep, progress=False,
                                   amp=False), CPU)
    assert plain.best_epoch >= 0


def test_early_stopping_waits_for_the_ramp_up(semi_ds):
    train, val = fold_split(semi_ds.splits, 0)

    class Flat(SegmentationTask):
        def validate(self, epoch):
            return {"val_volume_dice": 0.5}

    task = Flat(_Counted(), semi_ds, train, val,
                SegmentationLoss("ce+dice"), CPU, batch_size=4, iterations=1)
    result = fit(task, LoopSettings(epochs=6, patience=1, lr=0.0, stop_after=4, progress=False,
                                    amp=False), CPU)
    assert result.stopped_early and result.epochs_run == 4
    np.testing.assert_equal(result.best_epoch, 0)
