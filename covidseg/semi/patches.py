"""Patch sampling for pseudo-labelling (thesis 5.3.4), seeded, on tissue only.

* labelled volumes: patch centres inside the lesion bounding box enlarged by up to
  ``max_margin`` (10) pixels on each side (a random margin per side), on slices with lesion;
* unlabelled volumes: ``per_volume`` (32) centres inside the coarse box enlarged by up to 15 px.

Every centre lies on **tissue** — the lungs when the case has a lung mask, else the body
foreground (Otsu on the stored image, which excludes the zero padding and the air around the
body) — and a patch must have at least ``min_tissue`` of its pixels on tissue: up to
``TRIES`` centres are drawn per patch and the first that passes is kept; a patch none of whose
tries passes is dropped (the run reports how many).  Without this, a box around a small slice
puts most patches on the padding, and their copied lesion masks land on background (issue #8).
The patch side follows the slice (:func:`patch_side`): the thesis's 68 px were meant for 512-px
slices.

Patches crossing the image border are filled with 0 (the background after preprocessing).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from covidseg.data.intensity import foreground_mask

TRIES = 50
THESIS_PATCH = 68  # pixels on a 512-pixel slice (thesis 5.3.4)


def patch_side(requested: int, slice_side: int) -> int:
    """The patch side in pixels: ``requested`` when > 0, else the thesis's 68 px per 512 px of
    the slice side (``slice_side``), even, at least 16."""
    if requested > 0:
        return int(requested)
    return max(16, 2 * round(THESIS_PATCH * slice_side / 512 / 2))


@dataclass
class PatchSet:
    images: np.ndarray                      # (n, P, P) float32
    masks: np.ndarray | None                # (n, P, P) uint8 for labelled patches
    case_ids: list[str] = field(default_factory=list)
    coords: np.ndarray | None = None        # (n, 3): z and the patch's top-left y, x
    tissue: np.ndarray | None = None        # (n,) fraction of each patch's pixels on tissue

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


def tissue_mask(image: np.ndarray, lung: np.ndarray | None) -> np.ndarray:
    """Where patches may lie: the lungs when the case has them, else the body foreground."""
    if lung is not None and np.asarray(lung).any():
        return np.asarray(lung).astype(bool)
    return foreground_mask(np.asarray(image, np.float32))


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
                  mask: np.ndarray | None = None, slices: np.ndarray | None = None,
                  tissue: np.ndarray | None = None, min_tissue: float = 0.0):
    """``n`` patches whose centres lie in ``box`` (on ``slices`` when given) and on ``tissue``
    (everywhere in the box when None); returns (images, masks, coords, tissue fractions)."""
    z0, z1, y0, y1, x0, x1 = box
    region = np.zeros(image.shape, bool)
    region[z0:z1, y0:y1, x0:x1] = True
    if slices is not None and len(slices):
        keep = np.zeros(image.shape[0], bool)
        keep[np.asarray(slices)] = True
        region &= keep[:, None, None]
    if tissue is not None and (region & tissue).any():
        region &= tissue
    candidates = np.argwhere(region)
    imgs, msks, coords, fracs = [], [], [], []
    for _ in range(n):
        best = None
        for _ in range(TRIES):
            z, cy, cx = (int(v) for v in candidates[rng.integers(len(candidates))])
            frac = (float(cut_patch(tissue[z], cy, cx, size)[0].mean()) if tissue is not None
                    else 1.0)
            if best is None or frac > best[0]:
                best = (frac, z, cy, cx)
            if frac >= min_tissue:
                break
        frac, z, cy, cx = best
        if frac < min_tissue:
            continue  # mostly off tissue however drawn: dropped
        p, py, px = cut_patch(np.asarray(image[z], np.float32), cy, cx, size)
        imgs.append(p)
        if mask is not None:
            msks.append(cut_patch(np.asarray(mask[z], np.uint8), cy, cx, size)[0])
        coords.append((z, py, px))
        fracs.append(frac)
    return imgs, msks, coords, fracs


def sample_labelled(ds, case_ids, total: int, size: int, max_margin: int,
                    rng: np.random.Generator, min_tissue: float = 0.0) -> PatchSet:
    """``total`` patches spread over the labelled volumes that have lesion."""
    cases = []
    for c in case_ids:
        image, infection, lung = ds.load(c)
        if infection is not None and (box := box_of(np.asarray(infection))) is not None:
            cases.append((c, image, np.asarray(infection), lung, box))
    imgs, msks, ids, coords, fracs = [], [], [], [], []
    if not cases:
        return PatchSet(np.zeros((0, size, size), np.float32), np.zeros((0, size, size), np.uint8))
    counts = np.full(len(cases), total // len(cases))
    counts[: total % len(cases)] += 1
    for (c, image, infection, lung, box), n in zip(cases, counts):
        big = enlarge_box(box, max_margin, image.shape, rng)
        lesion_slices = np.nonzero(infection.any(axis=(1, 2)))[0]
        i, m, xy, f = sample_in_box(image, big, int(n), size, rng, infection, lesion_slices,
                                    tissue_mask(image, lung), min_tissue)
        imgs += i
        msks += m
        coords += xy
        fracs += f
        ids += [c] * len(i)
    if not imgs:
        return PatchSet(np.zeros((0, size, size), np.float32), np.zeros((0, size, size), np.uint8))
    return PatchSet(np.stack(imgs), np.stack(msks), ids, np.array(coords), np.array(fracs))


def sample_unlabelled(ds, boxes: dict, per_volume: int, size: int, max_margin: int,
                      rng: np.random.Generator, min_tissue: float = 0.0) -> PatchSet:
    """``per_volume`` patches inside each volume's (enlarged) coarse box, on tissue."""
    imgs, ids, coords, fracs = [], [], [], []
    for c, box in boxes.items():
        image, _, lung = ds.load(c)
        big = enlarge_box(box, max_margin, image.shape, rng)
        i, _, xy, f = sample_in_box(image, big, per_volume, size, rng,
                                    tissue=tissue_mask(image, lung), min_tissue=min_tissue)
        imgs += i
        coords += xy
        fracs += f
        ids += [c] * len(i)
    if not imgs:
        return PatchSet(np.zeros((0, size, size), np.float32), None)
    return PatchSet(np.stack(imgs), None, ids, np.array(coords), np.array(fracs))


def count_in_padding(patches: PatchSet) -> int:
    """Patches that are mostly (more than half) padding or background rather than tissue."""
    return int((np.asarray(patches.tissue) < 0.5).sum()) if patches.tissue is not None else 0


def cut_truth(truth_of, patches: PatchSet) -> np.ndarray:
    """The oracle masks under each patch (``truth_of(case_id)`` → (z, y, x) array)."""
    out = np.zeros(patches.images.shape, np.uint8)
    size = patches.images.shape[-1]
    for k, (c, (z, y0, x0)) in enumerate(zip(patches.case_ids, patches.coords)):
        truth = truth_of(c)
        out[k] = cut_patch(np.asarray(truth[z], np.uint8), y0 + size // 2, x0 + size // 2, size)[0]
    return out
