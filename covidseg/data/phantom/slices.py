"""A public-looking 2D slice set made of phantom slices (8-bit PNG/JPEG, chest crops of random
sizes, 0/255 masks), for the slice-set paths and benchmarks."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from covidseg.data.phantom.anatomy import seeded_rng
from covidseg.data.phantom.cohort import PHANTOM_VERSION
from covidseg.data.phantom.scan import COHORT_CENTRES, hu_to_display, make_phantom

SLICE_EXPORT_VERSION = 1


@dataclass(frozen=True)
class SliceExport:
    """What an export is made of (its ``settings``, stored in ``slices.json``: the same settings
    reuse it)."""

    n_labelled: int
    n_test: int
    n_unlabelled: int
    size: tuple[int, int]  # (low, high) longer side in pixels
    seed: int
    phantom_size: int
    depth_mm: int
    slices_per_volume: int
    difficulty: float
    jpg_fraction: float
    empty_fraction: float
    min_lesion_px: int

    def settings(self) -> dict:
        return {"version": SLICE_EXPORT_VERSION, **asdict(self), "size": list(self.size),
                "phantom_version": PHANTOM_VERSION}


def export_demo_slices(out_dir, n_labelled: int = 60, n_test: int = 30, n_unlabelled: int = 0,
                       size=(100, 200), seed: int = 0, phantom_size: int = 192,
                       depth_mm: int = 48, slices_per_volume: int = 3,
                       difficulty: float = 0.5, jpg_fraction: float = 0.0,
                       empty_fraction: float = 0.0, min_lesion_px: int = 30) -> dict:
    """Write axial slices of phantom volumes the way a public 2D COVID set looks; return a summary.

    Each slice is mapped to 0-255 with the lung window (:data:`DISPLAY_WINDOW`), cut to the
    chest (the body's bounding box, table included, with a random margin of -3..12 % per side, so
    crops are not square) and resized so that its longer side is drawn from ``size`` (a
    ``(low, high)`` range in pixels, or one number); images are 8-bit PNG (a ``jpg_fraction`` share
    of them JPEG, quality 90), masks 0/255 PNG with the image's stem::

        train/images/train_v003_z07.png   train/masks/train_v003_z07.png
        test/images/test_v001_z04.png     test/masks/test_v001_z04.png
        unlabelled/images/unlab_v000_z05.png   (n_unlabelled > 0)

    Training, test and unlabelled slices come from different volumes (no patient in two splits),
    at most ``slices_per_volume`` per volume, at least 2 apart in z; the labelled ones are drawn
    among slices with at least ``min_lesion_px`` lesion pixels, in proportion to their lesion
    area (``empty_fraction``: share of slices drawn from lesion-free ones instead).  Volumes are
    the demo cohort's (``make_phantom``, the COVID cohort's centres for train/test, the shifted
    unlabelled centres for unlabelled).
    Deterministic by ``seed``; an export already in ``out_dir`` with the same settings is reused.
    The summary's ``images``/``masks``/``test_images``/``test_masks``/``unlabelled`` are glob
    patterns for ``preprocess dataset=glob``.
    """
    out = Path(out_dir)
    lo, hi = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    if not 16 <= lo <= hi:
        raise ValueError(f"size={size!r}: need 16 <= low <= high")
    spec = SliceExport(n_labelled, n_test, n_unlabelled, (lo, hi), seed, phantom_size, depth_mm,
                       slices_per_volume, difficulty, jpg_fraction, empty_fraction,
                       min_lesion_px)
    settings = spec.settings()
    index = out / "slices.json"
    if index.exists():
        done = json.loads(index.read_text())
        if done.get("settings") == settings:
            return done
    jobs = (("train", n_labelled, "covid", 1000, True), ("test", n_test, "covid", 3000, True),
            ("unlabelled", n_unlabelled, "unlabelled", 5000, False))
    files = {split: _export_split(out, spec, split, n, cohort, offset, labelled)
             for split, n, cohort, offset, labelled in jobs if n > 0}
    summary = {"root": str(out), "settings": settings,
               "counts": {k: len(v) for k, v in files.items()},
               "images": "train/images/*" if "train" in files else "",
               "masks": "train/masks/*.png" if "train" in files else "",
               "test_images": "test/images/*" if "test" in files else "",
               "test_masks": "test/masks/*.png" if "test" in files else "",
               "unlabelled": "unlabelled/images/*" if "unlabelled" in files else "",
               "files": files}
    out.mkdir(parents=True, exist_ok=True)
    index.write_text(json.dumps(summary, indent=1))
    return summary


def _export_split(out: Path, spec: SliceExport, split: str, n_slices: int, cohort: str,
                  offset: int, labelled: bool) -> list[dict]:
    """The slices of one split, drawn from volumes of ``cohort`` until there are ``n_slices``."""
    prefix = "unlab" if split == "unlabelled" else split
    rows: list[dict] = []
    volume = 0
    while len(rows) < n_slices:
        if volume > 20 * n_slices + 20:
            raise RuntimeError(f"export_demo_slices: not enough {split} slices with lesion")
        vseed = spec.seed * 100_003 + offset + volume
        rng = seeded_rng(vseed, "slice-export")
        pool = COHORT_CENTRES[cohort]
        centre = pool[seeded_rng(vseed, "centre").integers(len(pool))]
        ph = make_phantom(vseed, size=spec.phantom_size, depth_mm=spec.depth_mm, kind="covid",
                          centre=centre, difficulty=spec.difficulty, hu=True)
        area = ph.infection.reshape(ph.infection.shape[0], -1).sum(axis=1)
        take = min(spec.slices_per_volume, n_slices - len(rows))
        for z in sorted(_pick_slices(rng, spec, area, take, labelled)):
            stem = f"{prefix}_v{volume:03d}_z{z:02d}"
            rows.append(_write_slice(out / split, stem, ph, z, rng, spec, labelled))
        volume += 1
    return rows


def _pick_slices(rng, spec: SliceExport, area: np.ndarray, take: int,
                 labelled: bool) -> list[int]:
    """Up to ``take`` slices at least 2 apart: labelled ones among lesion slices in proportion
    to their lesion area (or lesion-free ones, ``empty_fraction`` of the time), any slice else."""
    lesion_z = np.flatnonzero(area >= spec.min_lesion_px)
    empty_z = np.flatnonzero(area == 0)
    picks: list[int] = []
    for _ in range(take):
        want_empty = labelled and spec.empty_fraction > 0 and rng.random() < spec.empty_fraction
        cands = (empty_z if want_empty else lesion_z) if labelled else \
            np.arange(area.size)  # unlabelled: any slice
        cands = np.array([z for z in cands if all(abs(z - p) >= 2 for p in picks)], int)
        if cands.size:  # lesion slices in proportion to their lesion area
            w = area[cands].astype(float) + 1.0 if labelled and not want_empty else None
            picks.append(int(rng.choice(cands, p=None if w is None else w / w.sum())))
    return picks


def _write_slice(folder: Path, stem: str, ph, z: int, rng, spec: SliceExport,
                 labelled: bool) -> dict:
    """Slice ``z`` of ``ph`` cropped, resized and written (its mask too when labelled)."""
    import cv2

    out = folder.parent
    image, mask = _crop_slice(ph.image[z], ph.infection[z], rng, *spec.size)
    ext = ".jpg" if spec.jpg_fraction > 0 and rng.random() < spec.jpg_fraction else ".png"
    img_path = folder / "images" / f"{stem}{ext}"
    img_path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, 90] if ext == ".jpg" else []
    cv2.imwrite(str(img_path), image, params)
    row = {"stem": stem, "image": str(img_path.relative_to(out)),
           "shape": [int(image.shape[0]), int(image.shape[1])], "centre": ph.centre,
           "lesion_px": int((mask > 0).sum())}
    if labelled:
        mask_path = folder / "masks" / f"{stem}.png"
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(mask_path), mask)
        row["mask"] = str(mask_path.relative_to(out))
    return row


def _crop_slice(hu: np.ndarray, infection: np.ndarray, rng: np.random.Generator, lo: int,
                hi: int) -> tuple[np.ndarray, np.ndarray]:
    """(8-bit image, 0/255 mask) of one HU slice: lung window, chest crop, resized."""
    import cv2

    body = hu > -400.0
    ys, xs = np.nonzero(body)
    if ys.size == 0:
        ys, xs = np.array([0, hu.shape[0] - 1]), np.array([0, hu.shape[1] - 1])
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    h, w = y1 - y0, x1 - x0
    m = rng.uniform(-0.03, 0.12, 4)
    y0 = int(np.clip(y0 - m[0] * h, 0, hu.shape[0] - 8))
    y1 = int(np.clip(y1 + m[1] * h, y0 + 8, hu.shape[0]))
    x0 = int(np.clip(x0 - m[2] * w, 0, hu.shape[1] - 8))
    x1 = int(np.clip(x1 + m[3] * w, x0 + 8, hu.shape[1]))
    image = hu_to_display(hu[y0:y1, x0:x1]).astype(np.uint8)
    mask = infection[y0:y1, x0:x1].astype(np.uint8)
    longer = int(rng.integers(lo, hi + 1))
    scale = longer / max(image.shape)
    new_w = max(8, int(round(image.shape[1] * scale)))
    new_h = max(8, int(round(image.shape[0] * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    image = cv2.resize(image, (new_w, new_h), interpolation=interp)
    mask = cv2.resize(mask * 255, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return image, np.where(mask >= 128, 255, 0).astype(np.uint8)
