"""Cases found by patterns: the ``glob`` adapter (images and masks paired by file stem), the
images/masks folder layouts ``dataset=auto`` reads without patterns, and the ``demo`` cohort."""

from __future__ import annotations

import glob as globmod
import re
from pathlib import Path

from covidseg.base.errors import ConfigError
from covidseg.data.layouts.manifest import CaseRecord, images_in, is_image
from covidseg.data.readers import stem_of

_MASK_SUFFIX = re.compile(r"([_-](mask|seg|segmentation|label|labels|gt|infection|lesion))+$",
                          re.IGNORECASE)


def _expand(root: Path, pattern: str | None) -> list[Path]:
    if not pattern:
        return []
    pat = pattern if Path(pattern).is_absolute() else str(root / pattern)
    hits = sorted(Path(p) for p in globmod.glob(pat, recursive=True))
    return [p for p in hits if is_image(p) or p.is_dir()]


def _pair(images: list[Path], masks: list[Path], what: str) -> list[tuple[Path, Path | None]]:
    if not masks:
        return [(i, None) for i in images]
    by_stem = {_MASK_SUFFIX.sub("", stem_of(m)): m for m in masks}
    pairs = [(i, by_stem.get(_MASK_SUFFIX.sub("", stem_of(i)))) for i in images]
    if any(m is None for _, m in pairs):
        if len(images) == len(masks):  # names do not match: fall back to sorted order
            return list(zip(images, masks))
        missing = [str(i) for i, m in pairs if m is None][:3]
        raise ConfigError(f"{what}: {len(images)} images but {len(masks)} masks and no mask "
                          f"matches {', '.join(missing)}")
    return pairs


def glob_layout(root: Path, images=None, masks=None, test_images=None, test_masks=None,
                unlabelled=None, lungs=None, source=None, task="infection",
                **_) -> list[CaseRecord]:
    if not (images or unlabelled or test_images):
        raise ConfigError("dataset=glob needs at least one of images=, unlabelled=, test_images=")
    source = source or root.name or "glob"
    records = []
    lung_masks = {_MASK_SUFFIX.sub("", stem_of(p)).replace("_lung", ""): p
                  for p in _expand(root, lungs)}

    def lung_for(img: Path):
        p = lung_masks.get(stem_of(img))
        return str(p) if p else None

    for pattern, mpattern, split in ((images, masks, None), (test_images, test_masks, "test")):
        imgs = _expand(root, pattern)
        if pattern and not imgs:
            raise ConfigError(f"no images match {pattern!r} under {root}")
        msks = _expand(root, mpattern)
        if mpattern and not msks:
            raise ConfigError(f"no masks match {mpattern!r} under {root}")
        for img, m in _pair(imgs, msks, pattern or ""):
            records.append(CaseRecord(stem_of(img), str(img), str(m) if m else None, lung_for(img),
                                      source, m is not None, split, task=task))
    if unlabelled:
        imgs = _expand(root, unlabelled)
        if not imgs:
            raise ConfigError(f"no images match {unlabelled!r} under {root}")
        for img in imgs:
            records.append(CaseRecord(stem_of(img), str(img), None, lung_for(img), source, False,
                                      task=task))
    return records


def demo_layout(root: Path, **_) -> list[CaseRecord]:
    from covidseg.data.phantom import DEMO_LAYOUT

    records = []
    for cohort, (img_dir, inf_dir, lung_dir, truth_dir) in DEMO_LAYOUT.items():
        for img in images_in(root / img_dir):
            inf = root / inf_dir / img.name if inf_dir else None
            lung = root / lung_dir / img.name
            truth = root / truth_dir / img.name if truth_dir else None
            records.append(CaseRecord(stem_of(img), str(img),
                                      str(inf) if inf is not None and inf.exists() else None,
                                      str(lung) if lung.exists() else None, f"phantom-{cohort}",
                                      inf is not None,
                                      task="nodule" if cohort == "noncovid" else "infection",
                                      truth=str(truth) if truth is not None and truth.exists()
                                      else None))
    return records



# under labelled/ or train/ (images/ + masks/), optionally test/ (images/ + masks/) and
# unlabelled/images/ (or unlabelled/) — the layout of most public 2D slice sets and of
# covidseg's own slice export
FOLDER_PATTERNS = {
    "labelled": {"images": "labelled/images/*", "masks": "labelled/masks/*"},
    "train": {"images": "train/images/*", "masks": "train/masks/*"},
}
FOLDER_EXTRAS = {"test_images": "test/images/*", "test_masks": "test/masks/*",
                 "unlabelled": "unlabelled/images/*"}


def folder_patterns(root: Path) -> dict | None:
    """The glob patterns of an images/masks folder layout under ``root`` (see
    :data:`FOLDER_PATTERNS`), or None."""
    for part, pats in FOLDER_PATTERNS.items():
        if (root / part / "images").is_dir() and (root / part / "masks").is_dir():
            found = dict(pats)
            for key, pat in FOLDER_EXTRAS.items():
                if (root / pat.rsplit("/", 1)[0]).is_dir():
                    found[key] = pat
            if "unlabelled" not in found and (root / "unlabelled").is_dir() and any(
                    is_image(p) for p in (root / "unlabelled").iterdir()):
                found["unlabelled"] = "unlabelled/*"
            if "test_images" in found and "test_masks" not in found:
                del found["test_images"]
            return found
    return None
