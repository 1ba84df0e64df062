"""Training augmentation for z-scored CT slices (thesis 3.3): rotation within ±3°, a small elastic
deformation (albumentations), random gamma and Gaussian noise (numpy), mixup as an option.

albumentations' own ``RandomGamma`` / ``GaussNoise`` clip to [0, 1] or turn negative pixels into
NaN on z-scored input (STACK-NOTES), so the intensity transforms are written here: they act only
inside the lungs (non-zero pixels), map the slice to [0, 1] for the gamma and back, and keep the
background exactly 0.  No flips by default (patients lie supine).
"""

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
            noise = rng.standard_normal(image.shape, dtype=np.float32)  # float32: 3x cheaper at 512²
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


def mixup(images, masks, rng: np.random.Generator, alpha: float = 0.4):
    """Mix each sample with a random partner: images and masks alike (masks become soft)."""
    import torch

    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(images.shape[0])).to(images.device)
    return lam * images + (1 - lam) * images[perm], lam * masks + (1 - lam) * masks[perm]
