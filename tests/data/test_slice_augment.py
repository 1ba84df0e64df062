"""The ``slice`` augmentation preset (2D slice datasets) and the preset factory."""

import numpy as np
import pytest

from covidseg.data.augment import (
    AUGMENT_PRESETS,
    AffineSliceAugment,
    SliceAugment,
    make_augment,
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
    assert AUGMENT_PRESETS == ("ct", "slice")
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
