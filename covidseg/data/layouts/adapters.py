"""The adapters by name (``dataset=``), which one fits a folder (``dataset=auto``), and the
manifest of a data folder."""

from __future__ import annotations

import json
from pathlib import Path

from covidseg.base.errors import ConfigError
from covidseg.data.layouts.manifest import CaseRecord, unique_ids
from covidseg.data.layouts.nnunet_raw import nnunet
from covidseg.data.layouts.patterns import demo_layout, folder_patterns, glob_layout
from covidseg.data.layouts.public import covid19_ct_seg, mosmed, msd_lung, nsclc
from covidseg.data.vocabulary import Layout

ADAPTERS = {
    Layout.COVID19_CT_SEG: covid19_ct_seg,
    Layout.MOSMED: mosmed,
    Layout.MSD_LUNG: msd_lung,
    Layout.NSCLC: nsclc,
    Layout.NNUNET: nnunet,
    Layout.GLOB: glob_layout,
    Layout.DEMO: demo_layout,
}




def _is_nnunet(root: Path) -> bool:
    """An nnU-Net v2 raw dataset: dataset.json with channel_names (MSD's has modality and
    training lists) and imagesTr/."""
    try:
        meta = json.loads((root / "dataset.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "channel_names" in meta and (root / "imagesTr").is_dir()


def detect_layout(root: Path, patterns: dict) -> str:
    """Which adapter fits ``root`` (``dataset=auto``); for an images/masks folder layout
    (:func:`folder_patterns`) the glob adapter, whose patterns the caller fills in."""
    if any(patterns.get(k) for k in ("images", "unlabelled", "test_images")):
        return "glob"
    if folder_patterns(root):
        return "glob"
    if (root / "cohort.json").exists():
        return "demo"
    if (root / "dataset.json").exists():
        return "nnunet" if _is_nnunet(root) else "msd-lung"
    if (root / "Infection_Mask").is_dir() or any(root.glob("COVID-19-CT-Seg*")):
        return "covid19-ct-seg"
    if (root / "studies").is_dir():
        return "mosmed"
    if any(root.glob("**/LUNG1-*")):
        return "nsclc"
    raise ConfigError(f"{root}: cannot tell which dataset layout this is; pass dataset= "
                      f"({', '.join(ADAPTERS)}) or images=/masks= glob patterns")



def build_manifest(root, dataset: str = "auto", **patterns) -> tuple[str, list[CaseRecord]]:
    """Manifest of the cases under ``root`` read by the ``dataset`` adapter (or detected)."""
    root = Path(root)
    if not root.exists():
        raise ConfigError(f"{root}: data folder does not exist")
    if dataset == "auto":
        dataset = detect_layout(root, patterns)
        if dataset == "glob" and not any(patterns.get(k) for k in ("images", "unlabelled",
                                                                    "test_images")):
            patterns = {**patterns, **folder_patterns(root)}
    if dataset not in ADAPTERS:
        raise ConfigError(f"dataset={dataset!r} is not one of {', '.join(['auto', *ADAPTERS])}")
    records = unique_ids(ADAPTERS[dataset](root, **patterns))
    if not records:
        raise ConfigError(f"{root}: the {dataset} layout found no images")
    return dataset, records
