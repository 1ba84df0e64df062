"""Intensity normalisation: lung-window z-score for HU data, one fixed map for 8-bit display
values, foreground z-score otherwise.

Pure functions over numpy arrays.  The scheme is decided per case (``intensity=auto``): public
sets mix CT stored in Hounsfield units with CT stored as 0-255 display values.

8-bit exports (PNG/JPG slices) went through a viewing window that already fixed what a value
means: the same grey is the same tissue on every slice of the set.  ``display`` keeps that and maps
every image alike, (v − 127.5) / 63.75 (0…255 to −2…2).  A per-image z-score (``image``) would
move each slice by what it happens to show — more lung, a darker mean, every value shifted —
and on real COVID-19 slices that cost Dice (docs/benchmarks.md, "The training recipe on real CT").
"""

from __future__ import annotations

import numpy as np

from covidseg.base.errors import NotHounsfield
from covidseg.data.vocabulary import Intensity

DISPLAY_CENTRE, DISPLAY_SCALE = 127.5, 63.75


def _sample(array: np.ndarray) -> np.ndarray:
    """At most ~400,000 values of a volume (every 16th-or-so slice, then a stride): enough to
    tell its value range."""
    sample = array[:: max(1, array.shape[0] // 16)].ravel()
    return sample[:: sample.size // 400_000] if sample.size > 400_000 else sample


def looks_like_hu(array: np.ndarray) -> bool:
    """True when the values look like Hounsfield units: air far below zero and dense tissue above.

    CT in HU has its outside-body air at about -1000 (or padding at -1024 / -2048 / -3024), so its
    1st percentile is far negative; display-value images (0-255) and raw unsigned scanner values
    are never negative.
    """
    p1, p99 = np.percentile(_sample(array), [1, 99])
    return bool(p1 < -500 and p99 > -200)


def looks_like_display(array: np.ndarray) -> bool:
    """True when the values are 8-bit display values: whole numbers within 0…255."""
    sample = _sample(array)
    return bool(sample.size and sample.min() >= 0 and sample.max() <= 255
                and np.array_equal(sample, np.round(sample)))


def intensity_summary(array: np.ndarray) -> str:
    p1, p99 = np.percentile(array, [1, 99])
    return (f"range {float(array.min()):.0f}..{float(array.max()):.0f}, "
            f"1st-99th percentile {p1:.0f}..{p99:.0f}")


def choose_intensity_mode(array: np.ndarray, requested: str, path) -> tuple[str, bool]:
    """(mode used, whether the values looked like HU).  ``auto``: ``hu`` for Hounsfield units,
    ``display`` for 8-bit values, ``image`` for anything else; ``hu`` on non-HU data and
    ``display`` on values outside 0…255 are errors."""
    if requested not in Intensity.values():
        raise ValueError(f"intensity must be one of {Intensity.values()}")
    hu_like = looks_like_hu(array)
    if requested == "hu" and not hu_like:
        raise NotHounsfield(path, "intensities are not Hounsfield units "
                                  f"({intensity_summary(array)}); "
                                  "use intensity=image or intensity=auto")
    if requested == "display" and not looks_like_display(array):
        raise NotHounsfield(path, "intensities are not 8-bit display values "
                                  f"({intensity_summary(array)}); "
                                  "use intensity=image or intensity=auto")
    if requested == "auto":
        if hu_like:
            return "hu", True
        return ("display" if looks_like_display(array) else "image"), False
    return requested, hu_like


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of a sample of values (256-bin histogram)."""
    hist, edges = np.histogram(values, bins=256)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    c = np.cumsum(hist * centres)
    m0 = c / np.maximum(w0, 1)
    m1 = (c[-1] - c) / np.maximum(w1, 1)
    return float(centres[int(np.argmax(w0 * w1 * (m0 - m1) ** 2))])


def foreground_mask(array: np.ndarray) -> np.ndarray:
    """The body / object: above an Otsu threshold (the dark background of a slice or volume)."""
    fg = array > otsu_threshold(array[:: max(1, array.shape[0] // 16)].ravel())
    return fg if fg.any() else np.ones_like(array, dtype=bool)


def equalise_histogram(array: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Histogram equalisation of the values inside ``region`` (rank → uniform on the same range)."""
    out = array.astype(np.float32, copy=True)
    vals = out[region]
    if vals.size < 2:
        return out
    order = np.argsort(vals, kind="stable")
    ranks = np.empty_like(order)
    ranks[order] = np.arange(vals.size)
    lo, hi = float(vals.min()), float(vals.max())
    out[region] = lo + (hi - lo) * ranks / (vals.size - 1)
    return out


def zscore(array: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(array - mean) / std with mean and std taken over ``region``."""
    vals = array[region]
    mean = float(vals.mean()) if vals.size else 0.0
    std = float(vals.std()) if vals.size else 1.0
    std = std if std > 1e-6 else 1.0
    return ((array - mean) / std).astype(np.float32), mean, std


def lung_window_zscore(array: np.ndarray, lung: np.ndarray, window=(-1250.0, 250.0),
                       equalise: bool = False) -> tuple[np.ndarray, dict]:
    """HU scheme: clip to the lung window, z-score over lung voxels, background (outside) to 0."""
    clipped = np.clip(array, window[0], window[1]).astype(np.float32)
    if equalise:
        clipped = equalise_histogram(clipped, lung)
    out, mean, std = zscore(clipped, lung)
    out[~lung] = 0.0
    return out, {"norm_mean": mean, "norm_std": std}


def display_map(array: np.ndarray, region: np.ndarray | None, equalise: bool = False,
                zero_outside: bool = False) -> tuple[np.ndarray, dict]:
    """Display scheme (8-bit values): (v − 127.5) / 63.75 for every image alike; ``region`` (the
    lungs if known, else the foreground) is where ``equalise`` acts and, with ``zero_outside``,
    what is kept."""
    return _non_hu(array, region, equalise, zero_outside, (DISPLAY_CENTRE, DISPLAY_SCALE))


def image_zscore(array: np.ndarray, region: np.ndarray | None, equalise: bool = False,
                 zero_outside: bool = False) -> tuple[np.ndarray, dict]:
    """Image scheme (non-HU data): z-score over the region (the lungs if known, else foreground)."""
    return _non_hu(array, region, equalise, zero_outside, None)


def _non_hu(array, region, equalise: bool, zero_outside: bool, fixed) -> tuple[np.ndarray, dict]:
    """The display and image schemes: ``fixed`` (centre, scale) or, when None, the region's own
    mean and std."""
    region = foreground_mask(array) if region is None else region
    arr = array.astype(np.float32)
    if equalise:
        arr = equalise_histogram(arr, region)
    if fixed is None:
        out, mean, std = zscore(arr, region)
    else:
        mean, std = fixed
        out = ((arr - mean) / std).astype(np.float32)
    if zero_outside:
        out[~region] = 0.0
    return out, {"norm_mean": mean, "norm_std": std}
