import numpy as np
import torch

from covidseg.data.augment import SliceAugment, mixup, random_gamma


def _slice():
    rng = np.random.default_rng(0)
    img = np.zeros((64, 64), np.float32)
    img[16:48, 12:52] = rng.normal(0, 1, (32, 40))  # z-scored lungs, negative values included
    mask = np.zeros((64, 64), np.uint8)
    mask[20:30, 20:30] = 1
    return img, mask


def test_keeps_z_scored_values_intact_and_background_zero():
    img, mask = _slice()
    aug = SliceAugment(p=1.0)
    for s in range(10):
        out, m = aug(img, mask, np.random.default_rng(s))
        assert out.dtype == np.float32 and np.isfinite(out).all()
        assert out.min() < -1.0 and out.max() > 1.0  # not clipped to [0, 1]
        assert set(np.unique(m)) <= {0, 1} and m.dtype == np.uint8
        assert (out[:4] == 0).all() and (out[:, :4] == 0).all()  # background stays exactly 0
        assert abs(int(m.sum()) - int(mask.sum())) < 25  # small deformation only


def test_augment_is_reproducible_for_a_seed():
    img, mask = _slice()
    aug = SliceAugment(p=1.0)
    a = aug(img, mask, np.random.default_rng(3))
    b = aug(img, mask, np.random.default_rng(3))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_random_gamma_keeps_range_and_order():
    img, _ = _slice()
    region = img != 0
    out = random_gamma(img, region, 1.5)
    assert np.isclose(out[region].min(), img[region].min())
    assert np.isclose(out[region].max(), img[region].max())
    order = np.argsort(img[region])
    assert np.all(np.diff(out[region][order]) >= -1e-5)


def test_mixup_makes_soft_masks():
    imgs = torch.randn(4, 1, 8, 8)
    masks = (torch.rand(4, 1, 8, 8) > 0.5).float()
    mi, mm = mixup(imgs, masks, np.random.default_rng(1))
    assert mi.shape == imgs.shape and ((mm > 0) & (mm < 1)).any()
    assert float(mm.min()) >= 0 and float(mm.max()) <= 1
