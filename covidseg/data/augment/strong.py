"""The ``strong`` preset (:class:`StrongAugment`): nnU-Net's 2D training augmentation, for z-scored
slices."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np


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
