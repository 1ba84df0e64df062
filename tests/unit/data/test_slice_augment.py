"""The augmentation presets (``strong``: nnU-Net's strength, the default; ``slice``: round two's
2D preset) and the preset factory."""

import numpy as np
import pytest

from covidseg.data.augment import (
    AUGMENT_PRESETS,
    AffineSliceAugment,
    SliceAugment,
    StrongAugment,
    make_augment,
    parse_augment,
)


def _slice(background: float = -3.0):
    """A 2D slice as preprocessing makes it: z-scored foreground, padding at the slice's minimum."""
    rng = np.random.default_rng(0)
    img = np.full((96, 96), background, np.float32)
    img[10:86, 6:90] = rng.normal(0, 1, (76, 84)).clip(background + 0.5, None)
    mask = np.zeros((96, 96), np.uint8)
    mask[30:50, 40:60] = 1
    return img, mask


def test_presets_by_name():
    assert AUGMENT_PRESETS == ("ct", "slice", "strong")
    assert isinstance(make_augment("strong"), StrongAugment)
    assert isinstance(make_augment("ct"), SliceAugment)
    assert isinstance(make_augment("slice"), AffineSliceAugment)
    assert make_augment("none") is None
    with pytest.raises(ValueError, match="not one of"):
        make_augment("heavy")


def test_masks_stay_binary_and_values_are_not_clipped():
    img, mask = _slice()
    aug = make_augment("slice")
    for s in range(12):
        out, m = aug(img, mask, np.random.default_rng(s))
        assert out.dtype == np.float32 and out.shape == img.shape and np.isfinite(out).all()
        assert m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1} and m.any()
        assert out.min() < -2.5 and out.max() > 2.0  # z-scored values kept, not clipped to [0, 1]
        assert out.min() >= img.min() - 0.5  # the background is the slice's minimum (+ no NaN)


def test_image_and_mask_stay_aligned():
    """A bright square and its mask move together, whatever the rotation, scale and shift."""
    img = np.full((96, 96), -3.0, np.float32)
    img[8:88, 8:88] = -1.0
    img[30:54, 40:64] = 4.0
    mask = np.zeros((96, 96), np.uint8)
    mask[30:54, 40:64] = 1
    aug = AffineSliceAugment(p=1.0, p_intensity=1.0, hflip=0.5)
    for s in range(12):
        out, m = aug(img, mask, np.random.default_rng(s))
        bright = out > 1.5
        iou = (bright & (m > 0)).sum() / (bright | (m > 0)).sum()
        assert iou > 0.85, (s, iou)


def test_rotation_fills_with_the_slice_background_not_zero():
    """Foreground everywhere (values 1..3): revealed corners take the minimum (1), never 0."""
    rng = np.random.default_rng(1)
    img = rng.uniform(1.0, 3.0, (64, 64)).astype(np.float32)
    img[0, 0] = 1.0
    mask = np.zeros((64, 64), np.uint8)
    aug = AffineSliceAugment(rotate_deg=30, p=1.0, p_intensity=0.0)
    revealed = 0
    for s in range(6):
        out, _ = aug(img, mask, np.random.default_rng(s))
        assert out.min() >= 1.0 - 1e-5
        revealed += int((out == np.float32(1.0)).sum())
    assert revealed > 50  # rotations did reveal corners, filled with the minimum


def test_reproducible_for_a_seed():
    img, mask = _slice()
    aug = make_augment("slice")
    a = aug(img, mask, np.random.default_rng(3))
    b = aug(img, mask, np.random.default_rng(3))
    c = aug(img, mask, np.random.default_rng(4))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_strong_preset_settings_by_name():
    assert parse_augment("strong,rotate_deg=15,scale=0.8:1.25,mirror=0.5") == (
        "strong", {"rotate_deg": 15.0, "scale": (0.8, 1.25), "mirror": 0.5})
    aug = make_augment("strong,rotate_deg=15,scale=0.8:1.25", background="zero")
    assert (aug.rotate_deg, aug.scale, aug.background) == (15.0, (0.8, 1.25), "zero")
    assert aug.p_noise == StrongAugment().p_noise  # the rest: the preset's
    with pytest.raises(ValueError, match="rotation is not one of its settings"):
        make_augment("strong,rotation=3")
    with pytest.raises(ValueError, match="not a probability"):
        make_augment("strong,p_blur=2")
    with pytest.raises(ValueError, match="not a range"):
        make_augment("strong,scale=1.4:0.7")
    with pytest.raises(ValueError, match="not key=value"):
        make_augment("strong,mirror")


def _measure(aug, img, mask, draws=400):
    """Rotation angle and scale of each draw, read back from where a marked grid lands."""
    return [aug(img, mask, np.random.default_rng(s)) for s in range(draws)]


def test_strong_spatial_ranges_are_the_preset_s():
    """Each draw's rotation and scale lie within the preset's ranges (read back from the moved
    mask: its area scales by factor², its principal axis turns by the angle), and draws cover
    them."""
    img = np.zeros((128, 128), np.float32)
    img[20:108, 20:108] = 1.0
    mask = np.zeros((128, 128), np.uint8)
    mask[54:74, 34:94] = 1  # an elongated bar through the centre: 1200 px, horizontal
    aug = StrongAugment(rotate_deg=30, p_rotate=1.0, scale=(0.7, 1.4), p_scale=1.0, p_noise=0,
                        p_blur=0, p_brightness=0, p_contrast=0, p_low_res=0, p_gamma=0,
                        p_gamma_inverted=0)
    angles, scales = [], []
    for _, m in _measure(aug, img, mask, 200):
        ys, xs = np.nonzero(m)
        scales.append(np.sqrt(len(ys) / 1200.0))
        cov = np.cov(np.stack([xs, ys]).astype(float))
        vx, vy = np.linalg.eigh(cov)[1][:, -1]
        angle = np.degrees(np.arctan2(vy, vx))
        angles.append((angle + 90) % 180 - 90)
    angles, scales = np.abs(angles), np.array(scales)
    assert angles.max() <= 31.5 and angles.max() > 25  # within ±30°, and reaching it
    assert scales.min() >= 0.68 and scales.max() <= 1.42
    assert scales.min() < 0.75 and scales.max() > 1.3


def test_strong_intensity_ranges_and_background():
    """Brightness alone multiplies by a factor in its range; ``background=zero`` keeps the
    outside of the lungs exactly 0 under every transform; a slice set's fill is its minimum."""
    rng = np.random.default_rng(0)
    img = np.zeros((64, 64), np.float32)
    img[8:56, 8:56] = rng.normal(0.5, 1.0, (48, 48))
    mask = np.zeros((64, 64), np.uint8)
    bright = StrongAugment(p_rotate=0, p_scale=0, p_noise=0, p_blur=0, p_brightness=1.0,
                           p_contrast=0, p_low_res=0, p_gamma=0, p_gamma_inverted=0,
                           background="zero")
    factors = []
    for s in range(100):
        out, _ = bright(img, mask, np.random.default_rng(s))
        inside = img != 0
        factors.append(float(np.median(out[inside] / img[inside])))
        assert (out[~inside] == 0).all()
    assert 0.75 - 1e-5 <= min(factors) < 0.8 and 1.2 < max(factors) <= 1.25 + 1e-5
    everything = StrongAugment(p_rotate=1.0, p_scale=1.0, p_noise=1.0, p_blur=1.0,
                               p_brightness=1.0, p_contrast=1.0, p_low_res=1.0, p_gamma=1.0,
                               p_gamma_inverted=1.0, background="zero")
    for s in range(20):
        out, m = everything(img, mask, np.random.default_rng(s))
        assert out.dtype == np.float32 and np.isfinite(out).all() and out.shape == img.shape
        assert (out[out != 0].size > 0) and out.min() < 0  # z-scored values: not clipped
    corners = StrongAugment(rotate_deg=45, p_rotate=1.0, p_scale=0, p_noise=0, p_blur=0,
                            p_brightness=0, p_contrast=0, p_low_res=0, p_gamma=0,
                            p_gamma_inverted=0)  # background=min
    full = rng.uniform(1.0, 3.0, (64, 64)).astype(np.float32)
    out, _ = corners(full, mask, np.random.default_rng(1))
    assert out.min() >= 1.0 - 1e-4 and (np.abs(out - full.min()) < 1e-5).sum() > 20


def test_strong_mirrors_only_when_asked():
    img, mask = _slice()
    still = StrongAugment(p_rotate=0, p_scale=0, p_noise=0, p_blur=0, p_brightness=0,
                          p_contrast=0, p_low_res=0, p_gamma=0, p_gamma_inverted=0)
    for s in range(10):
        out, m = still(img, mask, np.random.default_rng(s))
        assert np.array_equal(out, img) and np.array_equal(m, mask)
    mirrored = StrongAugment(**{**still.__dict__, "mirror": 1.0})
    out, m = mirrored(img, mask, np.random.default_rng(0))
    assert np.array_equal(out, img[::-1, ::-1]) and np.array_equal(m, mask[::-1, ::-1])
