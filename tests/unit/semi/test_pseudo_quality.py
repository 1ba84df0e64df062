"""Pseudo-labels that can be checked: patches on tissue only, the quantile band, oracle scores
against hand-computed values, self-training labels of a network that is right, pixel weights."""

import numpy as np
import pytest
import torch

from covidseg.semi.assign import assign_pseudo_labels, top_k_cosine
from covidseg.semi.oracle import oracle_metrics, oracle_scores
from covidseg.semi.patches import count_in_padding, cut_truth, sample_unlabelled
from covidseg.semi.pseudoset import PseudoSet
from covidseg.semi.selftrain import confident_labels, model_pseudo_labels
from covidseg.train.losses import SegmentationLoss


class ArrayCases:
    """A dataset of in-memory cases with the store's ``load``/``load_truth`` contract."""

    def __init__(self, cases: dict):
        self.cases_ = cases
        self.cases = {c: {"shape": list(v[0].shape)} for c, v in cases.items()}

    def load(self, c):
        image, lung, _ = self.cases_[c]
        return image, None, lung

    def load_truth(self, c):
        return self.cases_[c][2]


def _slice_with_body(size=96, body=(30, 70, 20, 60)):
    """A volume whose tissue is a known rectangle; the rest is zero padding."""
    image = np.zeros((4, size, size), np.float32)
    y0, y1, x0, x1 = body
    image[:, y0:y1, x0:x1] = np.random.default_rng(0).normal(1.0, 0.2, (4, y1 - y0, x1 - x0))
    tissue = np.zeros(image.shape, bool)
    tissue[:, y0:y1, x0:x1] = True
    return image, tissue


@pytest.mark.parametrize("with_lungs", [True, False])
def test_unlabelled_patches_never_lie_on_padding(with_lungs):
    image, tissue = _slice_with_body()
    ds = ArrayCases({"a": (image, tissue.astype(np.uint8) if with_lungs else None, None)})
    whole = {"a": (0, 4, 0, 96, 0, 96)}  # a box over the whole padded slice
    patches = sample_unlabelled(ds, whole, 200, 24, 0, np.random.default_rng(1), min_tissue=0.5)
    size = 24
    centres = patches.coords[:, 1:] + size // 2
    assert tissue[patches.coords[:, 0], centres[:, 0], centres[:, 1]].all()
    from covidseg.semi.patches import tissue_mask

    found = tissue_mask(image, ds.load("a")[2])  # without lungs: the body foreground (Otsu)
    assert not (found & ~tissue).any() and found.sum() > 0.98 * tissue.sum()
    tissue = found
    assert (patches.tissue >= 0.5).all() and count_in_padding(patches) == 0
    for k, (z, y0, x0) in enumerate(patches.coords):  # the stored fraction is the real one
        window = np.zeros((size, size), bool)
        ys, xs = slice(max(0, y0), y0 + size), slice(max(0, x0), x0 + size)
        part = tissue[z, ys, xs]
        window[:part.shape[0], :part.shape[1]] = part
        assert window.mean() == pytest.approx(patches.tissue[k])
    # without the tissue rule, the same box puts patches on the padding
    from covidseg.semi.patches import sample_in_box

    _, _, coords, _ = sample_in_box(image, whole["a"], 200, size, np.random.default_rng(1))
    c = np.array(coords)
    assert not tissue[c[:, 0], c[:, 1] + size // 2, c[:, 2] + size // 2].all()


@pytest.mark.parametrize("rule", ["top1-band", "top2-weighted"])
def test_quantile_band_accepts_the_requested_fraction(rule):
    rng = np.random.default_rng(0)
    lab, unl = rng.normal(size=(30, 8)), rng.normal(size=(200, 8))
    masks = (rng.random((30, 4, 4)) > 0.5).astype(np.float32)
    a = assign_pseudo_labels(unl, lab, masks, rule, band="quantile", accept_fraction=0.15)
    assert len(a.accepted) == 30 and a.acceptance_rate == pytest.approx(0.15)
    score = a.top_sim[:, 0 if rule == "top1-band" else 1]
    rejected = np.setdiff1d(np.arange(200), a.accepted)
    assert score[a.accepted].min() >= score[rejected].max()  # the most similar ones
    key = "sim_low" if rule == "top1-band" else "sim_min"
    assert a.thresholds[key] == pytest.approx(score[a.accepted].min())
    # an absolute band set for another feature space can accept nothing; the quantile never does
    assert len(assign_pseudo_labels(unl, lab, masks, rule, 0.999, 1.0, 0.999).accepted) == 0


def test_centred_features_spread_the_similarities():
    rng = np.random.default_rng(0)
    common = np.abs(rng.normal(5, 1, 64))  # positive, shared: raw cosines crowd near 1
    lab = common + np.abs(rng.normal(0, 0.5, (40, 64)))
    unl = common + np.abs(rng.normal(0, 0.5, (100, 64)))
    raw, _ = top_k_cosine(unl, lab)
    centre = lab.mean(0, keepdims=True)
    centred, _ = top_k_cosine(unl - centre, lab - centre)
    assert raw[:, 0].min() > 0.95 and raw[:, 0].std() < 0.01
    assert centred[:, 0].std() > 5 * raw[:, 0].std()


def test_oracle_scores_equal_hand_computed_values():
    targets = np.zeros((3, 4, 4), np.float32)
    truth = np.zeros((3, 4, 4), np.uint8)
    targets[0, :2, :2] = 0.9   # 4 predicted
    truth[0, :2, :3] = 1       # 6 true, 4 overlap → Dice 8/10
    targets[1, 0, 0] = 0.4     # below 0.5: predicts nothing; truth 2 pixels → Dice 0
    truth[1, 3, 2:] = 1
    # item 2: both empty → Dice 1 (the empty-case policy)
    s = oracle_scores(targets, truth)
    assert s["dice"] == pytest.approx((0.8 + 0.0 + 1.0) / 3)
    assert s["dice_pooled"] == pytest.approx(2 * 4 / (4 + 8))
    assert s["precision"] == pytest.approx(1.0) and s["recall"] == pytest.approx(4 / 8)
    assert s["lesion_fraction"] == pytest.approx(2 / 3)
    valid = np.ones_like(truth, bool)
    valid[0, :, 2] = False     # the third true column of item 0 is not scored
    assert oracle_scores(targets[:1], truth[:1], valid[:1])["dice"] == pytest.approx(1.0)
    m = oracle_metrics(s, oracle_scores(targets[:0], truth[:0]))
    assert m["oracle_pseudo_dice"] == pytest.approx(s["dice"])
    assert "oracle_rejected_dice" not in m  # nothing rejected: NaN left out, not logged as 0


class Oracle(torch.nn.Module):
    """A network that is exactly right on the test volume: lesion where the intensity is above 2."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(20.0))

    def forward(self, x):
        return self.scale * (x - 2.0)


def test_model_pseudo_labels_of_a_perfect_network_equal_the_truth():
    image, tissue = _slice_with_body(size=64, body=(10, 50, 8, 56))
    truth = np.zeros(image.shape, np.uint8)
    truth[:, 20:30, 15:35] = 1
    image[truth.astype(bool)] = 3.0
    ds = ArrayCases({"v": (image, tissue.astype(np.uint8), truth)})
    items = model_pseudo_labels(Oracle(), ds, ["v"], torch.device("cpu"), confidence=0.97)
    assert len(items["images"]) == 4 and items["images"].shape[1:] == (64, 64)
    for k, (z, _, _) in enumerate(items["coords"]):
        np.testing.assert_array_equal(items["masks"][k], truth[z])
        assert (items["weights"][k] == 1).all()  # sure everywhere: every pixel is kept
    s = oracle_scores(items["masks"], np.stack([truth[z] for z, _, _ in items["coords"]]),
                      items["weights"] > 0)
    assert s["dice"] == 1.0 and s["precision"] == 1.0 and s["recall"] == 1.0
    # the asymmetric rule: lesion always kept, background only when sure
    target, weight = confident_labels(np.array([0.51, 0.2, 0.02, 0.9]), 0.97)
    assert target.tolist() == [1, 0, 0, 1] and weight.tolist() == [1, 0, 1, 1]


def test_cut_truth_matches_the_patches():
    image, tissue = _slice_with_body()
    truth = np.zeros(image.shape, np.uint8)
    truth[:, 40:50, 30:45] = 1
    ds = ArrayCases({"a": (image, tissue.astype(np.uint8), truth)})
    patches = sample_unlabelled(ds, {"a": (0, 4, 30, 70, 20, 60)}, 20, 16, 0,
                                np.random.default_rng(2), 0.5)
    under = cut_truth(ds.load_truth, patches)
    for k, (z, y0, x0) in enumerate(patches.coords):
        ref = np.zeros((16, 16), np.uint8)
        ys, xs = slice(max(0, y0), y0 + 16), slice(max(0, x0), x0 + 16)
        part = truth[z, ys, xs]
        ref[max(0, -y0):max(0, -y0) + part.shape[0], max(0, -x0):max(0, -x0) + part.shape[1]] = part
        np.testing.assert_array_equal(under[k], ref)


def test_pixel_weights_ignore_the_unweighted_pixels():
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 8, 8)
    target = (torch.rand(2, 1, 8, 8) > 0.5).float()
    weight = torch.ones(2, 1, 8, 8)
    weight[:, :, :4] = 0
    other = target.clone()
    other[:, :, :4] = 1 - other[:, :, :4]  # change the target only where the weight is 0
    for name in ("ce", "dice", "ce+dice"):
        loss = SegmentationLoss(name)
        assert loss(logits, target, weight) == pytest.approx(loss(logits, other, weight).item())
        assert loss(logits, target, torch.ones_like(weight)).item() == pytest.approx(
            loss(logits, target).item(), rel=1e-5)


def test_pseudo_set_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    ps = PseudoSet(rng.random((3, 8, 8), dtype=np.float32), rng.random((3, 8, 8), dtype=np.float32),
                   np.ones((3, 8, 8), np.float32), np.array(["a", "b", "c"]),
                   np.array([[0, 1, 2], [1, 0, 0], [2, 3, 4]]), "model", "key1", "")
    back = PseudoSet.load(ps.save(tmp_path / "p.npz"))
    assert back.source == "model" and back.dataset_key == "key1" and back.unlabelled_data == ""
    np.testing.assert_array_equal(back.images, ps.images)
    assert back.case_ids.tolist() == ["a", "b", "c"] and len(back) == 3
    np.savez(tmp_path / "old.npz", images=ps.images)
    from covidseg.base.errors import ConfigError

    with pytest.raises(ConfigError, match="not a covidseg pseudo-labelled set"):
        PseudoSet.load(tmp_path / "old.npz")


def test_strong_view_keeps_the_background_and_cuts_a_square():
    from covidseg.semi.views import strong_view, weak_view

    torch.manual_seed(0)
    x = torch.zeros(4, 1, 32, 32)
    x[:, :, 8:24, 8:24] = 1.0
    s = strong_view(x)
    assert (s[x == 0] == 0).all() and (weak_view(x)[x == 0] == 0).all()
    tissue_zeroed = ((s == 0) & (x != 0)).flatten(1).sum(1)
    assert (tissue_zeroed > 0).all()  # the cut-out square lands partly on tissue here


def test_patch_side_follows_the_slice_and_off_tissue_patches_are_dropped():
    from covidseg.semi.patches import patch_side, sample_in_box

    assert (patch_side(0, 512), patch_side(0, 256), patch_side(0, 64), patch_side(40, 64)) == (
        68, 34, 16, 40)  # the thesis's 68 px on 512-px slices, scaled; a side given wins
    image = np.ones((2, 64, 64), np.float32)
    tissue = np.zeros(image.shape, bool)
    tissue[:, :6, :6] = True  # a 6 × 6 corner: no 32-px patch is half on it
    box = (0, 2, 0, 64, 0, 64)
    rng = np.random.default_rng(0)
    imgs, _, coords, fracs = sample_in_box(image, box, 5, 32, rng, tissue=tissue, min_tissue=0.5)
    assert imgs == [] and coords == []  # dropped, not kept as the best of bad tries
    imgs, _, _, fracs = sample_in_box(image, box, 5, 4, rng, tissue=tissue, min_tissue=0.5)
    assert len(imgs) == 5 and min(fracs) >= 0.5
