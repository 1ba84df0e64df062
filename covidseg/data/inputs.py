"""What a preprocess run reads: the user's ``data=`` (a folder with its layout adapter, ``demo``,
glob patterns, or a ``sources=`` file combining several) turned into a manifest of
:class:`~covidseg.data.layouts.CaseRecord`."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from covidseg.base.errors import ConfigError
from covidseg.base.paths import cache_root
from covidseg.data.layouts import CaseRecord, build_manifest, combine_sources

if TYPE_CHECKING:
    from covidseg.data.phantom import DemoSpec

PATTERNS = ("images", "masks", "test_images", "test_masks", "unlabelled", "lungs")


@dataclass(frozen=True)
class InputSettings:
    """Where the cases come from (each field as the preprocess parameter of the same name says;
    ``''``: not given)."""

    data: str  # a data folder, 'demo' or ''
    dataset: str  # a Layout, or auto
    images: str  # glob patterns (dataset=glob), relative to data or absolute
    masks: str
    test_images: str
    test_masks: str
    unlabelled: str
    lungs: str
    task: str  # a Task that every case's masks mark ('': the adapter's)
    sources: str  # a sources file combining several folders
    demo: DemoSpec  # the cohort data=demo builds

    @property
    def patterns(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in PATTERNS}


def resolve_inputs(inputs: InputSettings,
                   progress: bool = True) -> tuple[Path, str, list[CaseRecord]]:
    """The data folder (building the demo cohort for ``data=demo``), its layout and manifest."""
    patterns = inputs.patterns
    if inputs.sources:
        if inputs.task:
            raise ConfigError(f"task={inputs.task} applies to one data folder: with sources= give "
                              "each source its own task")
        records = combine_sources(inputs.sources)
        return (Path(inputs.sources).expanduser().resolve().parent, "sources",
                _with_task(records, inputs.task))
    given = {k: v for k, v in patterns.items() if v}
    if given:
        return _glob_inputs(inputs, patterns, given)
    if inputs.dataset == "glob":
        raise ConfigError("dataset=glob needs glob patterns: images= (with masks=), test_images= "
                          "or unlabelled=" + (" (data=demo is the synthetic cohort)"
                                              if inputs.data == "demo" else ""))
    if inputs.data == "demo":
        from covidseg.data.phantom import build_cohort

        root = build_cohort(cache_root() / "demo" / inputs.demo.key(), inputs.demo,
                            progress=progress)
        dataset = "demo" if inputs.dataset == "auto" else inputs.dataset
        return (root, *build_manifest(root, dataset))
    if not inputs.data:
        raise ConfigError("data= is empty: give a folder or 'demo'")
    root = Path(inputs.data).expanduser()
    if not root.exists():
        raise ConfigError(f"{root}: data folder does not exist")
    dataset, records = build_manifest(root, inputs.dataset, **patterns)
    return root, dataset, _with_task(records, inputs.task)


def check_inputs(inputs: InputSettings) -> None:
    """``preprocess``'s check before its run exists: the data resolves to at least one case
    (the synthetic cohort, built by the run itself, always does)."""
    if inputs.data == "demo" and not inputs.sources and not any(inputs.patterns.values()):
        return
    root, dataset, records = resolve_inputs(inputs, progress=False)
    if not records:
        raise ConfigError(f"{root}: no cases found (dataset={dataset})")


def _glob_inputs(inputs: InputSettings, patterns: dict, given: dict):
    """The glob adapter for patterns given on the command line: relative to ``data`` (a folder),
    or absolute (then ``data`` may stay ``demo`` or empty: the patterns say where the data is)."""
    if not any(given.get(k) for k in ("images", "test_images", "unlabelled")):
        raise ConfigError(f"{', '.join(k + '=' for k in given)} given without images=, "
                          "test_images= or unlabelled=: masks pair with images by name")
    for img, msk in (("images", "masks"), ("test_images", "test_masks")):
        if given.get(msk) and not given.get(img):
            raise ConfigError(f"{msk}= given without {img}=")
    if inputs.dataset not in ("auto", "glob"):
        raise ConfigError(f"images=/masks=/unlabelled= patterns are read by dataset=glob, "
                          f"not dataset={inputs.dataset}")
    patterns = {k: os.path.expanduser(v) if v else v for k, v in patterns.items()}
    relative = [f"{k}={v}" for k, v in given.items() if not Path(patterns[k]).is_absolute()]
    if inputs.data in ("demo", ""):
        if relative:
            raise ConfigError(f"{relative[0]} is a relative pattern: give data=FOLDER (what it is "
                              "relative to) or an absolute pattern"
                              + (" (data=demo is the synthetic cohort)" if inputs.data else ""))
        fixed = [re.split(r"[*?\[]", patterns[k], maxsplit=1)[0] for k in given]
        root = Path(os.path.commonpath([os.path.dirname(f) or "/" for f in fixed]))
    else:
        root = Path(inputs.data).expanduser()
        if not root.exists():
            raise ConfigError(f"{root}: data folder does not exist")
    dataset, records = build_manifest(root, "glob", **patterns)
    return root, dataset, _with_task(records, inputs.task)


def _with_task(records: list[CaseRecord], task: str) -> list[CaseRecord]:
    for r in records if task else []:
        r.task = task
    return records
