"""The mild presets: ``ct`` (:class:`SliceAugment`, the thesis's: rotation within ±3°, a small
elastic deformation, gamma and noise inside the lungs) and ``slice`` (:class:`AffineSliceAugment`,
round two's for 2D slice sets: a random affine filled with the slice's background, gamma and noise
over the whole image); :func:`random_gamma` on a region."""

from __future__ import annotations

import os

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


class SliceAugment:
    """``augment(image, mask, rng) -> (image, mask)`` on one (H, W) float32 slice and its mask."""

    def __init__(self, rotate_deg: float = 3.0, elastic_alpha: float = 8.0,
                 elastic_sigma: float = 6.0, gamma=(0.8, 1.25), noise_std: float = 0.05,
                 p: float = 0.5):
        import albumentations as A
        import cv2

        self.spatial = A.Compose([
            A.Rotate(limit=rotate_deg, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=p),
            A.ElasticTransform(alpha=elastic_alpha, sigma=elastic_sigma,
                               border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=p),
        ], strict=True, seed=None)
        self.gamma, self.noise_std, self.p = gamma, noise_std, p

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator):
        self.spatial.set_random_seed(int(rng.integers(2 ** 31)))
        out = self.spatial(image=image.astype(np.float32), mask=mask)
        image, mask = out["image"], out["mask"]
        inside = image != 0
        if inside.any() and rng.random() < self.p:
            image = random_gamma(image, inside, rng.uniform(*self.gamma))
        if inside.any() and rng.random() < self.p:
            # float32: 3x cheaper at 512²
            noise = rng.standard_normal(image.shape, dtype=np.float32)
            image = image + inside * (np.float32(self.noise_std) * noise)
        return image.astype(np.float32), mask


AUGMENT_PRESETS = ("ct", "slice", "strong")


class AffineSliceAugment:
    """The ``slice`` preset: ``augment(image, mask, rng) -> (image, mask)``, like
    :class:`SliceAugment`.

    Spatial (albumentations, one draw per call): horizontal flip with probability ``hflip``
    (0 = never: left/right lungs are not mirror images — the heart sits on the left), then with
    probability ``p`` an ``Affine`` of rotation within ±``rotate_deg``, scale in ``scale`` and
    shift within ±``shift`` of the side; linear for the image, nearest for the mask.

    Fill value: the slice's own background, its minimum.  A 2D slice is resized and padded with
    its minimum before the z-score (:func:`covidseg.data.geometry.resize_slices`), so the minimum
    *is* the background a rotation should reveal; 0 would paint the corners with the foreground's
    mean intensity (soft tissue), a bright wedge the network never sees at test time.  The image
    is shifted by its minimum before the transform (background → 0, filled with 0) and back after,
    so the fill stays exact for every slice whatever its own minimum.

    Intensity (numpy, z-scored values are never clipped): with probability ``p_intensity`` each,
    a gamma in ``gamma`` on the image mapped to [0, 1] (its own min and max stay put) and Gaussian
    noise of ``noise_std`` (z units) on every pixel that is not background.

    Measured (``benchmarks/slice_baseline.py``'s demo export: 48 training + 12 validation slices,
    30 test slices at their original size, 96 px, 300 steps, lr 1e-3, CPU): test Dice 0.706
    without augmentation, 0.736 with ``ct``, 0.740 / 0.723 (seeds 0 / 1) with these defaults;
    adding ``hflip=0.5`` gave 0.758 / 0.710 — no gain beyond the seed-to-seed spread, so no flip.
    """

    def __init__(self, rotate_deg: float = 15.0, scale=(0.9, 1.1), shift: float = 0.05,
                 hflip: float = 0.0, gamma=(0.8, 1.25), noise_std: float = 0.05,
                 p: float = 0.8, p_intensity: float = 0.5):
        import albumentations as A
        import cv2

        steps = [A.HorizontalFlip(p=hflip)] if hflip > 0 else []
        steps.append(A.Affine(rotate=(-rotate_deg, rotate_deg), scale=tuple(scale),
                              translate_percent=(-shift, shift), interpolation=cv2.INTER_LINEAR,
                              mask_interpolation=cv2.INTER_NEAREST,
                              border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=p))
        self.spatial = A.Compose(steps, strict=True, seed=None)
        self.gamma, self.noise_std, self.p_intensity = gamma, noise_std, p_intensity
        self.settings = {"rotate_deg": rotate_deg, "scale": tuple(scale), "shift": shift,
                         "hflip": hflip, "gamma": tuple(gamma), "noise_std": noise_std, "p": p,
                         "p_intensity": p_intensity}

    def __repr__(self) -> str:
        return "AffineSliceAugment(" + ", ".join(f"{k}={v}" for k, v in self.settings.items()) + ")"

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator):
        image = np.asarray(image, dtype=np.float32)
        background = np.float32(image.min()) if image.size else np.float32(0)
        self.spatial.set_random_seed(int(rng.integers(2 ** 31)))
        out = self.spatial(image=image - background, mask=mask)
        image, mask = out["image"] + background, out["mask"]
        inside = image != background
        if inside.any() and rng.random() < self.p_intensity:
            image = random_gamma(image, np.ones_like(inside), rng.uniform(*self.gamma))
        if self.noise_std > 0 and inside.any() and rng.random() < self.p_intensity:
            noise = rng.standard_normal(image.shape, dtype=np.float32)
            image = image + inside * (np.float32(self.noise_std) * noise)
        return image.astype(np.float32), mask


def random_gamma(image: np.ndarray, region: np.ndarray, gamma: float) -> np.ndarray:
    """Gamma on the region's values mapped to [0, 1] and back; outside stays as it is."""
    vals = image[region]
    lo, hi = float(vals.min()), float(vals.max())
    if hi - lo < 1e-6:
        return image
    out = image.copy()
    out[region] = lo + (hi - lo) * ((vals - lo) / (hi - lo)) ** gamma
    return out
