"""Adapters of public datasets' own folder layouts: COVID-19-CT-Seg, MosMedData, MSD Task06_Lung,
NSCLC (see :mod:`covidseg.data.layouts`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from covidseg.base.errors import ConfigError
from covidseg.data.layouts.manifest import CaseRecord, images_in
from covidseg.data.readers import stem_of


def covid19_ct_seg(root: Path, **_) -> list[CaseRecord]:
    img_dirs = [d for d in root.iterdir() if d.is_dir() and d.name.startswith("COVID-19-CT-Seg")]
    if not img_dirs and (root / "images").is_dir():
        img_dirs = [root / "images"]
    if not img_dirs:
        raise ConfigError(f"{root}: no COVID-19-CT-Seg_20cases folder (COVID-19-CT-Seg layout)")
    records = []
    for img in images_in(img_dirs[0]):
        name = img.name
        inf = root / "Infection_Mask" / name
        lung = root / "Lung_Mask" / name
        records.append(CaseRecord(stem_of(img), str(img), str(inf) if inf.exists() else None,
                                  str(lung) if lung.exists() else None, "covid19-ct-seg",
                                  inf.exists()))
    return records


def mosmed(root: Path, **_) -> list[CaseRecord]:
    studies = root / "studies"
    if not studies.is_dir():
        raise ConfigError(f"{root}: no studies/ folder (MosMedData layout)")
    masks = {stem_of(m).replace("_mask", ""): m for m in images_in(root / "masks")}
    records = []
    for grade_dir in sorted(d for d in studies.iterdir() if d.is_dir()):
        for img in images_in(grade_dir):
            sid = stem_of(img)
            m = masks.get(sid)
            records.append(CaseRecord(sid, str(img), str(m) if m else None, None, "mosmed",
                                      m is not None, None, grade_dir.name))
    return records


def dataset_json(root: Path, layout: str) -> tuple[Path, dict]:
    """(path, contents) of the ``dataset.json`` of an MSD or nnU-Net folder."""
    meta_path = root / "dataset.json"
    if not meta_path.exists():
        raise ConfigError(f"{root}: no dataset.json ({layout} layout)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{meta_path}: not valid JSON ({exc.msg})") from exc
    if not isinstance(meta, dict):
        raise ConfigError(f"{meta_path}: not a JSON object")
    return meta_path, meta


def msd_lung(root: Path, **_) -> list[CaseRecord]:
    _, meta = dataset_json(root, "MSD Task06_Lung")
    records = []
    for item in meta.get("training", []):
        img, lab = root / item["image"], root / item["label"]
        if img.name.startswith("._"):
            continue
        records.append(CaseRecord(stem_of(img), str(img), str(lab), None, "msd-lung", True,
                                  "train", task="tumour"))
    for item in meta.get("test", []):
        img = root / (item if isinstance(item, str) else item["image"])
        if img.name.startswith("._"):
            continue
        records.append(CaseRecord(stem_of(img), str(img), None, None, "msd-lung", False, "test",
                                  task="tumour"))
    return records


def nsclc(root: Path, **_) -> list[CaseRecord]:
    img_dir = root / "images" if (root / "images").is_dir() else root
    mask_dir = root / "masks" if (root / "masks").is_dir() else root
    masks = images_in(mask_dir)
    records = []
    for img in images_in(img_dir):
        sid = stem_of(img)
        if not re.match(r"LUNG1-\d+$", sid):
            continue
        eff = [m for m in masks
               if stem_of(m).startswith(sid + "_") and "effusion" in m.name.lower()]
        lung = [m for m in masks if stem_of(m).startswith(sid + "_") and "lung" in
                stem_of(m)[len(sid):].lower()]
        records.append(CaseRecord(sid, str(img), str(eff[0]) if eff else None,
                                  str(lung[0]) if lung else None, "nsclc", bool(eff),
                                  task="effusion"))
    if not records:
        raise ConfigError(f"{root}: no LUNG1-NNN images (NSCLC layout)")
    return records
