"""What ``predict``'s ``input=`` and ``lungs=`` name: the CT inputs (a file, a DICOM folder, a
folder of volumes / slice images / DICOM series) and their lung masks, paired by file name."""

from __future__ import annotations

import logging
from pathlib import Path

from covidseg.base.errors import ConfigError
from covidseg.data.readers import VOLUME_SUFFIXES, is_slice_image, stem_of, suffix_of

log = logging.getLogger("covidseg.predict")


def list_inputs(inp: str) -> list[Path]:
    """The CT inputs of ``input=``: a file, a DICOM folder, or a folder of volumes / slice
    images."""
    if not inp:
        raise ConfigError("input= is empty: give a CT volume, a DICOM folder or a folder of "
                          "volumes")
    p = Path(inp).expanduser()
    if not p.exists():
        raise ConfigError(f"{p}: input does not exist")
    if p.is_file():
        return [p]
    images = sorted(f for f in p.iterdir() if f.is_file() and
                    (suffix_of(f) in VOLUME_SUFFIXES or is_slice_image(f)))
    if images:
        return images
    other_files = [f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")]
    subdirs = sorted(d for d in p.iterdir() if d.is_dir())
    if not other_files and not subdirs:
        raise ConfigError(f"{p}: empty folder: no CT volume, slice image or DICOM series in it")
    return subdirs if subdirs and not other_files else [p]  # folders of series, or one series


def lung_masks_for(inputs: list[Path], lungs: str, lung_method: str) -> dict[Path, Path]:
    """``lungs=`` (a folder or glob pattern) paired with the inputs by file name (suffixes such
    as ``_lung``/``_mask`` ignored); a model trained with provided lung masks needs them."""
    import glob as globmod
    import re

    if not lungs:
        if lung_method == "provided":
            raise ConfigError("the model was trained with lung_method=provided: give lungs=FOLDER "
                              "or a glob pattern of the inputs' lung masks (paired by file name)")
        return {}
    p = Path(lungs).expanduser()
    files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else \
        sorted(Path(f) for f in globmod.glob(str(p)))
    if not files:
        raise ConfigError(f"lungs={lungs}: no lung mask files there")
    strip = re.compile(r"([_-](lung|lungs|mask|seg|label))+$", re.IGNORECASE)
    by_stem = {strip.sub("", stem_of(f)): f for f in files}
    found = {i: by_stem.get(strip.sub("", stem_of(i)) if i.is_file() else i.name) for i in inputs}
    missing = [i.name for i, f in found.items() if f is None]
    if missing and lung_method == "provided":
        log.warning("no lung mask in %s for %s: those inputs will fail", lungs,
                    ", ".join(missing[:5]) + (" …" if len(missing) > 5 else ""))
    return {i: f for i, f in found.items() if f is not None}
