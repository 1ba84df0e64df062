"""Similarity search and assignment rules against brute force; the EMA formula; patch sampling."""

import copy

import numpy as np
import pytest
import torch

from covidseg.base.errors import ConfigError
from covidseg.models.factory import ModelSpec, build_model
from covidseg.semi.assign import assign_pseudo_labels, top_k_cosine
from covidseg.semi.encode import encode_patches
from covidseg.semi.patches import box_of, enlarge_box, sample_in_box
from covidseg.semi.teacher import ema_update, sigmoid_rampup


def brute_force(u, lab, masks, rule, lo=0.87, hi=0.96, mn=0.90):
    """The rules written out one patch at a time (the reference)."""
    out = {}
    for i, f in enumerate(u):
        sims = [float(np.dot(f, g) / (np.linalg.norm(f) * np.linalg.norm(g))) for g in lab]
        order = sorted(range(len(lab)), key=lambda j: -sims[j])
        j1, j2 = order[0], order[1]
        s1, s2 = sims[j1], sims[j2]
        if rule == "top1-band" and lo <= s1 <= hi:
            out[i] = (masks[j1], s1)
        if rule == "top2-weighted" and s1 > mn and s2 > mn:
            out[i] = ((s1 * masks[j1] + s2 * masks[j2]) / (s1 + s2), (s1 + s2) / 2)
    return out


@pytest.mark.parametrize("rule", ["top1-band", "top2-weighted"])
def test_batched_search_matches_brute_force(rule):
    rng = np.random.default_rng(0)
    lab = rng.normal(size=(40, 16)) + 3.0  # shared offset: similarities spread around 0.9
    u = np.concatenate([lab[rng.integers(0, 40, 30)] + rng.normal(0, s, (30, 16))
                        for s in (0.5, 1.0, 2.0)])
    masks = (rng.random((40, 8, 8)) > 0.5).astype(np.float32)
    a = assign_pseudo_labels(torch.tensor(u), torch.tensor(lab), masks, rule, chunk=7)
    ref = brute_force(u, lab, masks, rule)
    assert 0 < len(ref) < len(u), "the case must accept some and reject some"
    assert sorted(a.accepted.tolist()) == sorted(ref)
    for k, i in enumerate(a.accepted):
        np.testing.assert_allclose(a.masks[k], ref[i][0], atol=1e-5)
        assert a.weights[k] == pytest.approx(ref[i][1], abs=1e-5)
    v, idx = top_k_cosine(u, lab, k=2, chunk=5)
    full = ((u / np.linalg.norm(u, axis=1, keepdims=True))
            @ (lab / np.linalg.norm(lab, axis=1, keepdims=True)).T)
    np.testing.assert_allclose(v[:, 0].numpy(), full.max(axis=1), atol=1e-5)
    assert (idx[:, 0].numpy() == full.argmax(axis=1)).all()


def test_a_copy_of_a_labelled_patch_gets_its_label_with_similarity_one():
    torch.manual_seed(0)
    model = build_model(ModelSpec("unet", "resnet18")).eval()
    rng = np.random.default_rng(1)
    patches = rng.normal(size=(6, 68, 68)).astype(np.float32)
    masks = (rng.random((6, 68, 68)) > 0.7).astype(np.float32)
    lab = encode_patches(model, patches, torch.device("cpu"))
    unl = encode_patches(model, patches[[3]], torch.device("cpu"))
    v, idx = top_k_cosine(unl, lab)
    assert idx[0, 0] == 3 and v[0, 0] == pytest.approx(1.0, abs=1e-5)
    # 1.0 lies above the default band: a near-duplicate is rejected ...
    a = assign_pseudo_labels(unl, lab, masks, "top1-band")
    assert len(a.accepted) == 0 and a.top_sim[0, 0] == pytest.approx(1.0, abs=1e-5)
    # ... and accepted with its own label when the band includes 1
    a = assign_pseudo_labels(unl, lab, masks, "top1-band", sim_low=0.5, sim_high=1.0)
    assert a.accepted.tolist() == [0] and np.array_equal(a.masks[0], masks[3])
    # top2-weighted: accepted only when the second match also passes
    second = float(a.top_sim[0, 1])
    ok = assign_pseudo_labels(unl, lab, masks, "top2-weighted", sim_min=second - 1e-3)
    no = assign_pseudo_labels(unl, lab, masks, "top2-weighted", sim_min=second + 1e-3)
    assert ok.accepted.tolist() == [0] and no.accepted.tolist() == []
    with pytest.raises(ConfigError, match="rule="):
        assign_pseudo_labels(unl, lab, masks, "nearest")


def test_ema_update_is_the_formula_after_one_step():
    torch.manual_seed(0)
    student = build_model(ModelSpec("unet", "resnet18"))
    teacher = copy.deepcopy(student)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(torch.randn_like(p))
    before_t = {k: v.clone() for k, v in teacher.state_dict().items()}
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    x = torch.randn(2, 1, 64, 64)
    student(x).mean().backward()
    opt.step()
    ema_update(teacher, student, 0.99)
    s = student.state_dict()
    for k, v in teacher.state_dict().items():
        if v.dtype.is_floating_point:
            assert torch.allclose(v, 0.99 * before_t[k] + 0.01 * s[k], atol=1e-6), k
        else:
            assert torch.equal(v, s[k]), k
    assert sigmoid_rampup(0, 10) == pytest.approx(np.exp(-5)) and sigmoid_rampup(10, 10) == 1.0


def test_patches_are_sampled_inside_enlarged_boxes_reproducibly():
    mask = np.zeros((5, 50, 60), bool)
    mask[1:3, 20:25, 30:33] = True
    box = box_of(mask)
    assert box == (1, 3, 20, 25, 30, 33)
    big = enlarge_box(box, 10, mask.shape, np.random.default_rng(0))
    assert big[2] >= 10 and big[3] <= 35 and big[4] >= 20 and big[5] <= 43
    image = np.random.default_rng(0).normal(size=mask.shape).astype(np.float32)
    a = sample_in_box(image, big, 20, 16, np.random.default_rng(3), mask.astype(np.uint8))
    b = sample_in_box(image, big, 20, 16, np.random.default_rng(3), mask.astype(np.uint8))
    assert all(np.array_equal(x, y) for x, y in zip(a[0], b[0]))
    for z, y0, x0 in a[2]:
        assert big[0] <= z < big[1]
        assert big[2] <= y0 + 8 < big[3] and big[4] <= x0 + 8 < big[5]
