"""What a preprocess run reads: the user's ``data=`` (a folder with its layout adapter, ``demo``,
glob patterns, or a ``sources=`` file combining several) turned into a manifest of
:class:`~covidseg.data.layouts.CaseRecord`."""

from __future__ import annotations

import os
import re
from pathlib import Path

from covidseg.config import PreprocessConfig
from covidseg.data.layouts import CaseRecord, build_manifest, combine_sources
from covidseg.errors import ConfigError
from covidseg.paths import cache_root


def resolve_inputs(cfg: PreprocessConfig,
                   progress: bool = True) -> tuple[Path, str, list[CaseRecord]]:
    """The data folder (building the demo cohort for ``data=demo``), its layout and manifest."""
    patterns = {k: getattr(cfg, k) for k in ("images", "masks", "test_images", "test_masks",
                                              "unlabelled", "lungs")}
    if cfg.sources:
        if cfg.task:
            raise ConfigError(f"task={cfg.task} applies to one data folder: with sources= give "
                              "each source its own task")
        records = combine_sources(cfg.sources)
        return Path(cfg.sources).expanduser().resolve().parent, "sources", _with_task(records, cfg)
    given = {k: v for k, v in patterns.items() if v}
    if given:
        return _glob_inputs(cfg, patterns, given)
    if cfg.dataset == "glob":
        raise ConfigError("dataset=glob needs glob patterns: images= (with masks=), test_images= "
                          "or unlabelled=" + (" (data=demo is the synthetic cohort)"
                                              if cfg.data == "demo" else ""))
    if cfg.data == "demo":
        from covidseg.data.phantom import DemoSpec, build_cohort

        spec = DemoSpec(labelled=cfg.demo_labelled, unlabelled=cfg.demo_unlabelled,
                        noncovid=cfg.demo_noncovid, size=cfg.demo_size, depth_mm=cfg.demo_depth,
                        difficulty=cfg.demo_difficulty,
                        display_fraction=cfg.demo_display_fraction, seed=0)
        root = build_cohort(cache_root() / "demo" / spec.key(), spec, progress=progress)
        dataset = "demo" if cfg.dataset == "auto" else cfg.dataset
        return (root, *build_manifest(root, dataset))
    if not cfg.data:
        raise ConfigError("data= is empty: give a folder or 'demo'")
    root = Path(cfg.data).expanduser()
    if not root.exists():
        raise ConfigError(f"{root}: data folder does not exist")
    dataset, records = build_manifest(root, cfg.dataset, **patterns)
    return root, dataset, _with_task(records, cfg)


def check_inputs(cfg: PreprocessConfig) -> None:
    """``preprocess``'s check before its run exists: the data resolves to at least one case
    (the synthetic cohort, built by the run itself, always does)."""
    if cfg.data == "demo" and not cfg.sources and not any(
            getattr(cfg, k) for k in ("images", "masks", "test_images", "test_masks",
                                      "unlabelled", "lungs")):
        return
    root, dataset, records = resolve_inputs(cfg, progress=False)
    if not records:
        raise ConfigError(f"{root}: no cases found (dataset={dataset})")


def _glob_inputs(cfg: PreprocessConfig, patterns: dict, given: dict):
    """The glob adapter for patterns given on the command line: relative to ``data`` (a folder),
    or absolute (then ``data`` may stay ``demo`` or empty: the patterns say where the data is)."""
    if not any(given.get(k) for k in ("images", "test_images", "unlabelled")):
        raise ConfigError(f"{', '.join(k + '=' for k in given)} given without images=, "
                          "test_images= or unlabelled=: masks pair with images by name")
    for img, msk in (("images", "masks"), ("test_images", "test_masks")):
        if given.get(msk) and not given.get(img):
            raise ConfigError(f"{msk}= given without {img}=")
    if cfg.dataset not in ("auto", "glob"):
        raise ConfigError(f"images=/masks=/unlabelled= patterns are read by dataset=glob, "
                          f"not dataset={cfg.dataset}")
    patterns = {k: os.path.expanduser(v) if v else v for k, v in patterns.items()}
    relative = [f"{k}={v}" for k, v in given.items() if not Path(patterns[k]).is_absolute()]
    if cfg.data in ("demo", ""):
        if relative:
            raise ConfigError(f"{relative[0]} is a relative pattern: give data=FOLDER (what it is "
                              "relative to) or an absolute pattern"
                              + (" (data=demo is the synthetic cohort)" if cfg.data else ""))
        fixed = [re.split(r"[*?\[]", patterns[k], maxsplit=1)[0] for k in given]
        root = Path(os.path.commonpath([os.path.dirname(f) or "/" for f in fixed]))
    else:
        root = Path(cfg.data).expanduser()
        if not root.exists():
            raise ConfigError(f"{root}: data folder does not exist")
    dataset, records = build_manifest(root, "glob", **patterns)
    return root, dataset, _with_task(records, cfg)


def _with_task(records: list[CaseRecord], cfg: PreprocessConfig) -> list[CaseRecord]:
    for r in records if cfg.task else []:
        r.task = cfg.task
    return records
