"""Published metric conventions: area-weighted surface Dice (COVID-19-CT-Seg / DeepMind, via MONAI),
the Inf-Net EvaluationTool threshold-free Dice, and the union-box crop of the surface metrics."""

import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from covidseg.train.metrics import (
    sensitivity_specificity,
    surface_dice_area,
    surface_metrics,
    threshold_dice_curve,
    threshold_free_dice,
)


def blobs(shape, sigma, quantile, rng):
    """Random blobs: smoothed noise above its quantile."""
    x = ndi.gaussian_filter(rng.standard_normal(shape), sigma)
    return x > np.quantile(x, quantile)


def small_lesions(shape, region, rng, sigma=1.5, quantile=0.85):
    """Blobs confined to ``region`` (slices) of an otherwise empty volume, so the crop is active."""
    m = np.zeros(shape, bool)
    sub = tuple(s.stop - s.start for s in region)
    m[region] = blobs(sub, sigma, quantile, rng)
    return m


def monai_full(pred, ref, spacing, tol):
    """MONAI on the uncropped arrays, canonical one-hot (background, lesion) form."""
    from monai.metrics import compute_surface_dice

    def onehot(m):
        return torch.from_numpy(np.stack([~m, m]))[None]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v = compute_surface_dice(onehot(pred), onehot(ref), class_thresholds=[tol],
                                 include_background=False, spacing=spacing, use_subvoxels=True)
    return float(v[0, 0])


# ------------------------------------------------------------------ surface Dice (area-weighted)

@pytest.mark.parametrize("seed,tol", [(0, 1.0), (1, 3.0), (2, 2.0)])
def test_surface_dice_area_equals_monai_on_uncropped_3d(seed, tol):
    rng = np.random.default_rng(seed)
    shape, spacing = (16, 48, 48), (2.5, 0.7, 0.9)
    # lesions in the interior (the crop removes most of the volume) ...
    pred = small_lesions(shape, (slice(3, 12), slice(8, 36), slice(10, 40)), rng)
    ref = small_lesions(shape, (slice(4, 13), slice(6, 34), slice(12, 42)), rng)
    want = monai_full(pred, ref, spacing, tol)
    assert 0.0 < want < 1.0
    assert surface_dice_area(pred, ref, spacing, tol) == pytest.approx(want, rel=1e-6, abs=1e-7)
    # ... and blobs filling the volume, touching its faces (crop clipped to the array)
    pred = blobs((12, 32, 32), 2.0, 0.7, rng)
    ref = blobs((12, 32, 32), 2.0, 0.7, rng)
    assert pred[0].any() and ref[:, :, -1].any()
    want = monai_full(pred, ref, spacing, tol)
    assert 0.0 < want < 1.0
    assert surface_dice_area(pred, ref, spacing, tol) == pytest.approx(want, rel=1e-6, abs=1e-7)


def test_surface_dice_area_uses_spacing_in_axis_order():
    rng = np.random.default_rng(5)
    shape = (16, 40, 40)
    pred = small_lesions(shape, (slice(2, 14), slice(5, 35), slice(5, 35)), rng)
    ref = small_lesions(shape, (slice(2, 14), slice(5, 35), slice(5, 35)), rng)
    a = surface_dice_area(pred, ref, (2.5, 0.7, 0.9))
    b = surface_dice_area(pred, ref, (0.9, 0.7, 2.5))
    assert a == pytest.approx(monai_full(pred, ref, (2.5, 0.7, 0.9), 3.0), rel=1e-6)
    assert b == pytest.approx(monai_full(pred, ref, (0.9, 0.7, 2.5), 3.0), rel=1e-6)
    assert a != pytest.approx(b, abs=1e-3)


def test_surface_dice_area_2d_equals_monai():
    rng = np.random.default_rng(7)
    shape, spacing = (64, 64), (0.8, 0.6)
    pred = small_lesions(shape, (slice(10, 50), slice(5, 45)), rng, sigma=2.0)
    ref = small_lesions(shape, (slice(12, 52), slice(8, 48)), rng, sigma=2.0)
    for tol in (0.5, 2.0):
        want = monai_full(pred, ref, spacing, tol)
        assert 0.0 < want < 1.0
        assert surface_dice_area(pred, ref, spacing, tol) == pytest.approx(want, rel=1e-6)


def test_surface_dice_area_empty_policy_and_hand_cases():
    shape = (12, 32, 32)
    empty = np.zeros(shape, bool)
    cube = empty.copy()
    cube[3:8, 5:15, 5:15] = True
    assert surface_dice_area(empty, empty, (2.5, 0.7, 0.7)) == 1.0
    assert surface_dice_area(cube, empty, (2.5, 0.7, 0.7)) == 0.0
    assert surface_dice_area(empty, cube, (2.5, 0.7, 0.7)) == 0.0
    assert surface_dice_area(cube, cube, (2.5, 0.7, 0.7)) == 1.0
    # a second cube 10 voxels × 1 mm = 10 mm away along x: no surface within 3 mm → 0
    far = empty.copy()
    far[3:8, 5:15, 25:30] = True
    assert surface_dice_area(far, cube, (1.0, 1.0, 1.0), 3.0) == 0.0
    # ... but with a tolerance larger than the farthest surface distance everything counts
    assert surface_dice_area(far, cube, (1.0, 1.0, 1.0), 40.0) == 1.0
    # one voxel shift along z: within tolerance at 2.5 mm spacing, partly outside at 5 mm
    shifted = np.roll(cube, 1, axis=0)
    assert surface_dice_area(shifted, cube, (2.5, 0.7, 0.7), 3.0) == 1.0
    assert surface_dice_area(shifted, cube, (5.0, 0.7, 0.7), 3.0) < 1.0


# ------------------------------------------------------------ union-box crop of surface_metrics

def reference_surface_metrics(pred, ref, spacing, tol):
    """Voxel-face HD95 / NSD on the full, uncropped arrays (the definition of surface_metrics)."""
    st = ndi.generate_binary_structure(pred.ndim, 1)
    sp = pred & ~ndi.binary_erosion(pred, structure=st, border_value=0)
    sr = ref & ~ndi.binary_erosion(ref, structure=st, border_value=0)
    d_pr = ndi.distance_transform_edt(~sr, sampling=spacing)[sp]
    d_rp = ndi.distance_transform_edt(~sp, sampling=spacing)[sr]
    hd95 = max(np.percentile(d_pr, 95), np.percentile(d_rp, 95))
    nsd = ((d_pr <= tol).sum() + (d_rp <= tol).sum()) / (d_pr.size + d_rp.size)
    return hd95, nsd


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_surface_metrics_crop_is_exact(seed):
    rng = np.random.default_rng(100 + seed)
    shape, spacing = (20, 56, 56), (2.5, 0.7, 0.9)
    if seed < 2:  # small lesions inside a large volume: the crop removes most of it
        pred = small_lesions(shape, (slice(4, 14), slice(10, 40), slice(20, 50)), rng)
        ref = small_lesions(shape, (slice(5, 15), slice(12, 42), slice(18, 48)), rng)
    else:  # blobs touching the array faces: the crop is clipped to the array
        pred = blobs(shape, 2.0, 0.8, rng)
        ref = blobs(shape, 2.0, 0.8, rng)
    hd95, nsd = reference_surface_metrics(pred, ref, spacing, 3.0)
    got = surface_metrics(pred, ref, spacing, 3.0)
    assert 0.0 < nsd < 1.0 and hd95 > 0
    assert got["hd95"] == pytest.approx(hd95, rel=1e-12, abs=1e-12)
    assert got["nsd"] == pytest.approx(nsd, rel=1e-12, abs=1e-12)


def test_surface_metrics_crop_is_exact_2d_lesion_at_corner():
    pred = np.zeros((64, 64), bool)
    ref = np.zeros((64, 64), bool)
    pred[0:6, 0:9] = True  # touches two array edges
    ref[2:9, 1:7] = True
    hd95, nsd = reference_surface_metrics(pred, ref, (0.8, 0.6), 1.0)
    got = surface_metrics(pred, ref, (0.8, 0.6), 1.0)
    assert got["hd95"] == pytest.approx(hd95, rel=1e-12)
    assert got["nsd"] == pytest.approx(nsd, rel=1e-12)


# ------------------------------------------------------------------ Inf-Net threshold-free Dice

def mapminmax01(x):
    """MATLAB mapminmax(x, 0, 1) of a row (constant row: range taken as 1 → zeros)."""
    x = np.asarray(x, dtype=float)
    rangex = x.max() - x.min()
    if rangex == 0:
        rangex = 1.0
    return 1.0 * (x - x.min()) / rangex + 0.0


def fmeasure_calu_dice(smap, gt, threshold):
    """Dice as in Inf-Net's Fmeasure_calu.m, one threshold at a time."""
    if threshold > 1:
        threshold = 1
    label3 = np.zeros(gt.shape)
    label3[smap >= threshold] = 1
    num_and = int(np.sum((label3 == 1) & gt))
    num_obj = int(gt.sum())
    num_pred = int(label3.sum())
    if num_and == 0:
        return 0.0
    return 2 * num_and / (num_obj + num_pred)


def infnet_main(probs, refs):
    """The Dice part of Inf-Net's main.m: per image, per threshold; column mean; mean and max."""
    thresholds = [(255 - k) / 255 for k in range(256)]  # 1:-1/255:0
    table = np.zeros((len(probs), len(thresholds)))
    for i, (p, g) in enumerate(zip(probs, refs)):
        resmap = mapminmax01(p)
        for t, th in enumerate(thresholds):
            table[i, t] = fmeasure_calu_dice(resmap, g.astype(bool), th)
    column = table.mean(axis=0)
    return column.mean(), column.max(), column


def infnet_images():
    rng = np.random.default_rng(42)
    # 1: a lesion with a matching probability bump, quantised like an 8-bit PNG (values k/255,
    #    min 0 and max 1, so pixels fall exactly on thresholds: exercises `>=` on ties)
    g1 = np.zeros((32, 40), bool)
    g1[8:20, 10:26] = True
    p1 = ndi.gaussian_filter(g1.astype(float), 2) + 0.3 * rng.random(g1.shape)
    p1 = np.round(255 * (p1 - p1.min()) / (p1.max() - p1.min())) / 255
    # 2: all probability mass outside the lesion: no true positive at any threshold above 0
    g2 = np.zeros((24, 24), bool)
    g2[2:6, 2:6] = True
    p2 = 0.2 + 0.8 * rng.random(g2.shape)
    p2[g2] = 0.1  # the lesion holds the map minimum → normalised 0
    # 3: empty reference: Dice 0 at every threshold
    g3 = np.zeros((20, 28), bool)
    p3 = 0.5 * rng.random(g3.shape) + 0.2
    return [p1, p2, p3], [g1, g2, g3]


def test_threshold_free_dice_equals_naive_infnet():
    probs, refs = infnet_images()
    thravg, mx, column = infnet_main(probs, refs)
    got = threshold_free_dice(probs, refs)
    assert got["curve"].shape == (256,)
    np.testing.assert_allclose(got["curve"], column, rtol=1e-12, atol=0)
    assert got["dice_thravg"] == pytest.approx(thravg, rel=1e-12)
    assert got["dice_max"] == pytest.approx(mx, rel=1e-12)
    # the constructed cases do what they claim
    c2 = threshold_dice_curve(probs[1], refs[1])
    assert (c2[:-1] == 0).all() and c2[-1] == pytest.approx(2 * 16 / (16 + 24 * 24))
    assert (threshold_dice_curve(probs[2], refs[2]) == 0).all()
    c1 = threshold_dice_curve(probs[0], refs[0])
    assert c1.max() > 0.5 and len(np.unique(c1)) > 50


def test_threshold_dice_curve_hand_case():
    prob = np.array([[0.0, 1.0], [0.5, 0.25]])
    ref = np.array([[0, 1], [1, 0]], bool)
    c = threshold_dice_curve(prob, ref)
    # t > 0.5 (128 thresholds): {1.0} → 2/3; 0.25 < t ≤ 0.5 (64): {1, .5} → 1;
    # 0 < t ≤ 0.25 (63): {1, .5, .25} → 0.8; t = 0: everything → 4/6
    want = np.array([2 / 3] * 128 + [1.0] * 64 + [0.8] * 63 + [2 / 3])
    np.testing.assert_allclose(c, want, rtol=1e-12)
    got = threshold_free_dice([prob], [ref])
    assert got["dice_thravg"] == pytest.approx(200.4 / 256)
    assert got["dice_max"] == 1.0


def test_threshold_dice_curve_constant_map_is_zero_map():
    ref = np.zeros((6, 6), bool)
    ref[1:3, 1:3] = True
    for c in (0.0, 0.7):
        curve = threshold_dice_curve(np.full(ref.shape, c), ref)
        assert (curve[:-1] == 0).all()  # normalised to zeros: predicted only at t = 0
        assert curve[-1] == pytest.approx(2 * 4 / (4 + 36))
    # empty reference and a constant map: prediction and reference both empty above t = 0,
    # still Dice 0 (no true positive), unlike this module's overlap policy
    assert (threshold_dice_curve(np.full(ref.shape, 0.3), np.zeros_like(ref)) == 0).all()


def test_threshold_free_dice_rejects_mismatched_inputs():
    with pytest.raises(ValueError):
        threshold_dice_curve(np.zeros((4, 4)), np.zeros((4, 5), bool))
    with pytest.raises(ValueError):
        threshold_free_dice([np.zeros((4, 4))], [])


# ------------------------------------------------------------------ sensitivity / specificity

def test_sensitivity_specificity_hand_case_and_undefined():
    pred = np.array([1, 1, 1, 0, 0, 0, 0, 0], bool)
    ref = np.array([1, 1, 0, 1, 0, 0, 0, 0], bool)
    sens, spec = sensitivity_specificity(pred, ref)  # TP 2, FP 1, FN 1, TN 4
    assert sens == pytest.approx(2 / 3) and spec == pytest.approx(4 / 5)
    empty, full = np.zeros(8, bool), np.ones(8, bool)
    assert sensitivity_specificity(empty, empty) == (1.0, 1.0)  # module policy: both empty
    s, sp = sensitivity_specificity(pred, empty)
    assert np.isnan(s) and sp == pytest.approx(5 / 8)
    assert sensitivity_specificity(full, full) == (1.0, 1.0)
    s, sp = sensitivity_specificity(pred, full)
    assert s == pytest.approx(3 / 8) and np.isnan(sp)
