"""Patch sampling for pseudo-labelling (thesis 5.3.4), seeded.

* labelled volumes: patch centres inside the lesion bounding box enlarged by up to
  ``max_margin`` (10) pixels on each side (a random margin per side), on slices with lesion;
* unlabelled volumes: ``per_volume`` (32) centres inside the coarse box enlarged by up to 15 px.

Patches crossing the image border are filled with 0 (the background after preprocessing).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class PatchSet:
    images: np.ndarray                      # (n, P, P) float32
    masks: np.ndarray | None                # (n, P, P) uint8 for labelled patches
    case_ids: list[str] = field(default_factory=list)
    coords: np.ndarray | None = None        # (n, 3): z and the patch's top-left y, x

    def __len__(self) -> int:
        return len(self.images)


def box_of(mask: np.ndarray) -> tuple[int, int, int, int, int, int] | None:
    """(z0, z1, y0, y1, x0, x1), end-exclusive, of a (z, y, x) mask's foreground; None if empty."""
    if not mask.any():
        return None
    zs, ys, xs = (np.nonzero(mask.any(axis=a))[0] for a in ((1, 2), (0, 2), (0, 1)))
    return int(zs[0]), int(zs[-1]) + 1, int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1


def enlarge_box(box, max_margin: int, shape, rng: np.random.Generator):
    """The box grown in-plane by a random 0..max_margin pixels on each side, clipped to shape."""
    z0, z1, y0, y1, x0, x1 = box
    m = rng.integers(0, max_margin + 1, size=4) if max_margin > 0 else np.zeros(4, int)
    return (z0, z1, max(0, y0 - int(m[0])), min(shape[1], y1 + int(m[1])),
            max(0, x0 - int(m[2])), min(shape[2], x1 + int(m[3])))


def cut_patch(slice2d: np.ndarray, cy: int, cx: int, size: int) -> tuple[np.ndarray, int, int]:
    """The size × size window centred at (cy, cx), zero outside; returns it and its corner."""
    y0, x0 = cy - size // 2, cx - size // 2
    out = np.zeros((size, size), dtype=slice2d.dtype)
    H, W = slice2d.shape
    sy0, sx0, sy1, sx1 = max(0, y0), max(0, x0), min(H, y0 + size), min(W, x0 + size)
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = slice2d[sy0:sy1, sx0:sx1]
    return out, y0, x0


def sample_in_box(image: np.ndarray, box, n: int, size: int, rng: np.random.Generator,
                  mask: np.ndarray | None = None, slices: np.ndarray | None = None):
    """``n`` patches whose centres lie in ``box`` (on ``slices`` when given)."""
    z0, z1, y0, y1, x0, x1 = box
    zs = slices if slices is not None and len(slices) else np.arange(z0, z1)
    imgs, msks, coords = [], [], []
    for _ in range(n):
        z = int(rng.choice(zs))
        cy, cx = int(rng.integers(y0, max(y0 + 1, y1))), int(rng.integers(x0, max(x0 + 1, x1)))
        p, py, px = cut_patch(np.asarray(image[z], np.float32), cy, cx, size)
        imgs.append(p)
        if mask is not None:
            msks.append(cut_patch(np.asarray(mask[z], np.uint8), cy, cx, size)[0])
        coords.append((z, py, px))
    return imgs, msks, coords


def sample_labelled(ds, case_ids, total: int, size: int, max_margin: int,
                    rng: np.random.Generator) -> PatchSet:
    """``total`` patches spread over the labelled volumes that have lesion."""
    cases = []
    for c in case_ids:
        image, infection, _ = ds.load(c)
        if infection is not None and (box := box_of(np.asarray(infection))) is not None:
            cases.append((c, image, np.asarray(infection), box))
    imgs, msks, ids, coords = [], [], [], []
    if not cases:
        return PatchSet(np.zeros((0, size, size), np.float32), np.zeros((0, size, size), np.uint8))
    counts = np.full(len(cases), total // len(cases))
    counts[: total % len(cases)] += 1
    for (c, image, infection, box), n in zip(cases, counts):
        big = enlarge_box(box, max_margin, image.shape, rng)
        lesion_slices = np.nonzero(infection.any(axis=(1, 2)))[0]
        i, m, xy = sample_in_box(image, big, int(n), size, rng, infection, lesion_slices)
        imgs += i
        msks += m
        coords += xy
        ids += [c] * int(n)
    return PatchSet(np.stack(imgs), np.stack(msks), ids, np.array(coords))


def sample_unlabelled(ds, boxes: dict, per_volume: int, size: int, max_margin: int,
                      rng: np.random.Generator) -> PatchSet:
    """``per_volume`` patches inside each volume's (enlarged) coarse box."""
    imgs, ids, coords = [], [], []
    for c, box in boxes.items():
        image, _, _ = ds.load(c)
        big = enlarge_box(box, max_margin, image.shape, rng)
        i, _, xy = sample_in_box(image, big, per_volume, size, rng)
        imgs += i
        coords += xy
        ids += [c] * per_volume
    if not imgs:
        return PatchSet(np.zeros((0, size, size), np.float32), None)
    return PatchSet(np.stack(imgs), None, ids, np.array(coords))
