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

import numpy as np

from covidseg.data.augment.mild import AffineSliceAugment, SliceAugment, random_gamma
from covidseg.data.augment.strong import StrongAugment

# the presets by name (``augment=``)
PRESETS = {"ct": SliceAugment, "slice": AffineSliceAugment, "strong": StrongAugment}
AUGMENT_PRESETS = tuple(PRESETS)


def make_augment(name: str, background: str = "min"):
    """The augmentation preset ``name``: ``strong`` (:class:`StrongAugment`, nnU-Net's strength;
    ``background`` as it says), ``ct`` (:class:`SliceAugment`, the thesis's, CT volumes),
    ``slice`` (:class:`AffineSliceAugment`, the mild 2D preset of round two), or ``none``
    (returns None: no augmentation).  ``name`` may carry overrides of the preset's fields:
    ``strong,rotate_deg=15,scale=0.8:1.25``."""
    preset, overrides = parse_augment(name)
    if preset == "none" and not overrides:
        return None
    if preset not in PRESETS:
        raise ValueError(f"augment={preset!r} is not one of "
                         f"{', '.join(AUGMENT_PRESETS + ('none',))}")
    if preset == "strong":
        overrides = {"background": background, **overrides}
    known = set(inspect.signature(PRESETS[preset]).parameters)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"augment={preset}: {', '.join(unknown)} is not one of its settings "
                         f"({', '.join(sorted(known))})")
    return PRESETS[preset](**overrides)


def mixup(images, masks, rng: np.random.Generator, alpha: float = 0.4):
    """Mix each sample with a random partner: images and masks alike (masks become soft)."""
    import torch

    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(images.shape[0])).to(images.device)
    return lam * images + (1 - lam) * images[perm], lam * masks + (1 - lam) * masks[perm]


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


__all__ = ["AUGMENT_PRESETS", "PRESETS", "AffineSliceAugment", "SliceAugment", "StrongAugment",
           "make_augment", "mixup", "parse_augment", "random_gamma"]
