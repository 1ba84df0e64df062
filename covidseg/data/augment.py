"""Training augmentation for z-scored CT slices (thesis 3.3): rotation within ±3°, a small elastic
deformation (albumentations), random gamma and Gaussian noise (numpy), mixup as an option.

albumentations' own ``RandomGamma`` / ``GaussNoise`` clip to [0, 1] or turn negative pixels into
NaN on z-scored input (STACK-NOTES), so the intensity transforms are written here: they act only
inside the lungs (non-zero pixels), map the slice to [0, 1] for the gamma and back, and keep the
background exactly 0.  No flips by default (patients lie supine).

Three presets (:func:`make_augment`, names in :data:`AUGMENT_PRESETS`):

* ``strong`` — :class:`StrongAugment`, nnU-Net's 2D strength (rotation, scale 0.7-1.4, noise,
  blur, brightness, contrast, low resolution, gamma; mirroring off), for 2D slice sets
  (``background=min``) and for slices of CT volumes (``background=zero``): the default;
* ``ct`` — :class:`SliceAugment` above, for slices of preprocessed CT volumes (lungs z-scored,
  everything outside them exactly 0);
* ``slice`` — :class:`AffineSliceAugment`, for 2D slice datasets (PNG/JPG exports): these are
  normalised over the whole image (8-bit: ``intensity=display``) and padded with the slice's
  minimum, so their background is *not* 0 and the whole image carries signal.  A random affine
  (rotation, scale, shift) filled with the slice's own background value, then gamma and noise
  over the whole image.

``ct`` is the thesis's augmentation and ``slice`` round two's; both stay selectable by name.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, fields

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


def make_augment(name: str, background: str = "min"):
    """The augmentation preset ``name``: ``strong`` (:class:`StrongAugment`, nnU-Net's strength;
    ``background`` as it says), ``ct`` (:class:`SliceAugment`, the thesis's, CT volumes),
    ``slice`` (:class:`AffineSliceAugment`, the mild 2D preset of round two), or ``none``
    (returns None: no augmentation).  ``name`` may carry overrides of the preset's fields:
    ``strong,rotate_deg=15,scale=0.8:1.25``."""
    preset, overrides = parse_augment(name)
    classes = {"ct": SliceAugment, "slice": AffineSliceAugment, "strong": StrongAugment}
    if preset == "none" and not overrides:
        return None
    if preset not in classes:
        raise ValueError(f"augment={preset!r} is not one of "
                         f"{', '.join(AUGMENT_PRESETS + ('none',))}")
    if preset == "strong":
        overrides = {"background": background, **overrides}
    known = set(inspect.signature(classes[preset]).parameters)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"augment={preset}: {', '.join(unknown)} is not one of its settings "
                         f"({', '.join(sorted(known))})")
    return classes[preset](**overrides)


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


@dataclass
class StrongAugment:
    """The ``strong`` preset: nnU-Net's 2D training augmentation, written for z-scored slices
    (``augment(image, mask, rng) -> (image, mask)``).  Each field is a range or probability, and
    each can be set by name: ``augment=strong,rotate_deg=30,mirror=0.5`` (a range as
    ``low:high``).

    In this order, each with its own probability per slice:

    * rotation within ±``rotate_deg`` (``p_rotate``) and scaling by a factor in ``scale``
      (``p_scale``), one affine resampling (linear image, nearest mask), filled with the
      background;
    * Gaussian noise of a variance drawn in ``noise_variance`` (``p_noise``);
    * Gaussian blur of σ in ``blur_sigma`` pixels (``p_blur``);
    * brightness: the image multiplied by a factor in ``brightness`` (``p_brightness``);
    * contrast: spread around the mean by a factor in ``contrast``, kept within the slice's
      range (``p_contrast``);
    * low resolution: down-sampled by a factor in ``low_res`` (nearest) and back (cubic)
      (``p_low_res``);
    * gamma in ``gamma`` on the image mapped to [0, 1], mean and spread restored after; first on
      the inverted image (``p_gamma_inverted``), then on the image (``p_gamma``);
    * mirroring of each axis with probability ``mirror`` (0: never — left and right lungs are not
      mirror images; set it only where it measures better).

    ``background``: ``min`` for 2D slice sets (normalised over the whole image and padded with
    the slice's minimum: rotations reveal that value, every pixel is intensity-augmented), ``zero``
    for slices of preprocessed CT volumes (lungs z-scored, everything outside exactly 0: the
    intensity transforms act inside the lungs only and the outside stays 0).  Values are never
    clipped to [0, 1] (albumentations' intensity transforms would; STACK-NOTES).
    """

    rotate_deg: float = 30.0
    p_rotate: float = 0.5
    scale: tuple = (0.7, 1.4)
    p_scale: float = 0.5
    noise_variance: tuple = (0.0, 0.1)
    p_noise: float = 0.1
    blur_sigma: tuple = (0.5, 1.0)
    p_blur: float = 0.2
    brightness: tuple = (0.75, 1.25)
    p_brightness: float = 0.15
    contrast: tuple = (0.75, 1.25)
    p_contrast: float = 0.15
    low_res: tuple = (0.5, 1.0)
    p_low_res: float = 0.25
    gamma: tuple = (0.7, 1.5)
    p_gamma: float = 0.3
    p_gamma_inverted: float = 0.1
    mirror: float = 0.0
    background: str = "min"

    def __post_init__(self):
        if self.background not in ("min", "zero"):
            raise ValueError(f"background={self.background!r} is not min or zero")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.startswith("p_") or f.name == "mirror":
                if not 0.0 <= float(value) <= 1.0:
                    raise ValueError(f"{f.name}={value} is not a probability")
            elif isinstance(value, tuple) and (len(value) != 2 or value[0] > value[1]):
                raise ValueError(f"{f.name}={value} is not a range low:high")

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator):
        import cv2

        image = np.asarray(image, dtype=np.float32)
        zero = self.background == "zero"
        fill = np.float32(0.0) if zero or not image.size else np.float32(image.min())
        rotate, scale = rng.random() < self.p_rotate, rng.random() < self.p_scale
        if rotate or scale:
            h, w = image.shape
            angle = rng.uniform(-self.rotate_deg, self.rotate_deg) if rotate else 0.0
            factor = rng.uniform(*self.scale) if scale else 1.0
            m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, factor)
            image = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=float(fill))
            mask = cv2.warpAffine(np.ascontiguousarray(mask), m, (w, h), flags=cv2.INTER_NEAREST,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        region = image != 0 if zero else None
        out = image
        if rng.random() < self.p_noise:
            std = np.float32(np.sqrt(rng.uniform(*self.noise_variance)))
            out = out + std * rng.standard_normal(out.shape, dtype=np.float32)
        if rng.random() < self.p_blur:
            out = cv2.GaussianBlur(out, (0, 0), float(rng.uniform(*self.blur_sigma)))
        if rng.random() < self.p_brightness:
            out = out * np.float32(rng.uniform(*self.brightness))
        if rng.random() < self.p_contrast:  # statistics of the lungs (zero) or the slice (min)
            vals = out[region] if region is not None and region.any() else out
            lo, hi, mean = vals.min(), vals.max(), vals.mean()
            out = np.clip((out - mean) * np.float32(rng.uniform(*self.contrast)) + mean, lo, hi)
        if rng.random() < self.p_low_res:
            h, w = out.shape
            f = rng.uniform(*self.low_res)
            small = cv2.resize(out, (max(1, round(w * f)), max(1, round(h * f))),
                               interpolation=cv2.INTER_NEAREST)
            out = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        for inverted, p in ((True, self.p_gamma_inverted), (False, self.p_gamma)):
            if rng.random() < p:
                out = _gamma_keep_stats(out, rng.uniform(*self.gamma), inverted, region)
        if region is not None:  # outside the lungs stays exactly 0
            out = np.where(region, out, np.float32(0))
        for axis in (0, 1):
            if self.mirror > 0 and rng.random() < self.mirror:
                out, mask = np.flip(out, axis), np.flip(mask, axis)
        return np.ascontiguousarray(out, dtype=np.float32), np.ascontiguousarray(mask)


def _gamma_keep_stats(image: np.ndarray, gamma: float, inverted: bool,
                      region: np.ndarray | None = None) -> np.ndarray:
    """Gamma on the image mapped to [0, 1] (of the inverted image with ``inverted``), its mean
    and standard deviation restored after (nnU-Net's ``retain_stats``); with ``region`` the
    range and statistics are those of the region's pixels (the lungs), and only they change."""
    inside = region if region is not None and region.any() else np.ones(image.shape, bool)
    vals = image[inside]
    lo, hi = float(vals.min()), float(vals.max())
    if hi - lo < 1e-6:
        return image
    mean, std = float(vals.mean()), float(vals.std())
    x = np.clip((vals - lo) / (hi - lo), 0.0, 1.0)
    x = 1 - (1 - x) ** gamma if inverted else x ** gamma
    new_std = float(x.std())
    if new_std <= 1e-8:
        return image
    out = image.copy()
    out[inside] = (x - float(x.mean())) / new_std * std + mean
    return out.astype(np.float32)


def parse_augment(text: str) -> tuple[str, dict]:
    """``name[,key=value,…]`` → (name, overrides); a range is written ``low:high``."""
    name, *items = [t.strip() for t in str(text).split(",") if t.strip()] or ["none"]
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"augment: {item!r} is not key=value")
        lo, colon, hi = value.partition(":")
        overrides[key.strip()] = (float(lo), float(hi)) if colon else _scalar(value)
    return name, overrides


def _scalar(value: str):
    try:
        return float(value)
    except ValueError:
        return value.strip()
