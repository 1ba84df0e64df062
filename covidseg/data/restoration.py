"""Models Genesis-style distortions for self-supervised restoration pretraining (Zhou et al.):
the network sees a distorted slice and learns to restore the original (MSE).

Four transformations, each drawn at random per sample (the published recipe, in 2D):

* a **non-linear intensity** mapping — a monotone Bézier curve through random control points
  (sometimes its mirror image) applied to the slice rescaled to [0, 1];
* **local pixel shuffling** — pixels shuffled inside many small windows (texture, not shape);
* **in-painting** — a few boxes replaced by noise (the network must fill them from context);
* **out-painting** — everything but a central-ish box replaced by noise.

In- and out-painting are exclusive.  Pure numpy, seeded by the caller's generator; the
background (exactly 0 after preprocessing) is kept where the transformation does not touch it.
"""

from __future__ import annotations

import numpy as np
from scipy.special import comb


def bezier_curve(points: np.ndarray, n: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """x, y samples of the Bézier curve of control points (k, 2)."""
    k = len(points) - 1
    t = np.linspace(0.0, 1.0, n)
    basis = np.stack([comb(k, i) * t ** i * (1 - t) ** (k - i) for i in range(k + 1)])
    xy = basis.T @ points
    return xy[:, 0], xy[:, 1]


def nonlinear_intensity(x01: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    points = np.array([[0.0, 0.0], [rng.random(), rng.random()], [rng.random(), rng.random()],
                       [1.0, 1.0]])
    xs, ys = bezier_curve(points)
    order = np.argsort(xs)
    out = np.interp(x01, xs[order], ys[order])
    return 1.0 - out if rng.random() < 0.5 else out


def local_pixel_shuffle(x: np.ndarray, rng: np.random.Generator, windows: int = 200,
                        max_side: int = 8) -> np.ndarray:
    out = x.copy()
    H, W = x.shape
    for _ in range(windows):
        h, w = int(rng.integers(1, max_side + 1)), int(rng.integers(1, max_side + 1))
        y0, x0 = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
        block = out[y0:y0 + h, x0:x0 + w].reshape(-1)
        out[y0:y0 + h, x0:x0 + w] = rng.permutation(block).reshape(h, w)
    return out


def in_painting(x: np.ndarray, rng: np.random.Generator, boxes: int = 5) -> np.ndarray:
    out = x.copy()
    H, W = x.shape
    for _ in range(int(rng.integers(1, boxes + 1))):
        h, w = int(rng.integers(H // 8, H // 3 + 1)), int(rng.integers(W // 8, W // 3 + 1))
        y0, x0 = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
        out[y0:y0 + h, x0:x0 + w] = rng.random((h, w))
    return out


def out_painting(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    H, W = x.shape
    out = rng.random(x.shape)
    h, w = int(rng.integers(H // 2, H - H // 8 + 1)), int(rng.integers(W // 2, W - W // 8 + 1))
    y0, x0 = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
    out[y0:y0 + h, x0:x0 + w] = x[y0:y0 + h, x0:x0 + w]
    return out


class GenesisDistort:
    """``distort(image, rng) -> (distorted, target)`` on one z-scored (H, W) slice.

    Intensities are mapped to [0, 1] over [-clip, clip] z for the distortions and back, so the
    network sees inputs on the scale fine-tuning will feed it; the target is the slice clipped
    to [-clip, clip].
    """

    def __init__(self, clip: float = 3.0, p_nonlinear: float = 0.9, p_shuffle: float = 0.5,
                 p_paint: float = 0.9, p_inpaint: float = 0.2):
        self.clip, self.p_nonlinear, self.p_shuffle = clip, p_nonlinear, p_shuffle
        self.p_paint, self.p_inpaint = p_paint, p_inpaint

    def __call__(self, image: np.ndarray, rng: np.random.Generator):
        c = self.clip
        target = np.clip(image, -c, c).astype(np.float32)
        x = (target.astype(np.float64) + c) / (2 * c)
        if rng.random() < self.p_shuffle:
            x = local_pixel_shuffle(x, rng)
        if rng.random() < self.p_nonlinear:
            x = nonlinear_intensity(x, rng)
        if rng.random() < self.p_paint:
            x = in_painting(x, rng) if rng.random() < self.p_inpaint else out_painting(x, rng)
        return (x * 2 * c - c).astype(np.float32), target
