"""The ``nnunet`` adapter: an nnU-Net v2 raw dataset (``DatasetNNN_Name/``) read back as cases;
its label names say which values are the lesion and which the lungs."""

from __future__ import annotations

import json
import re
from pathlib import Path

from covidseg.base.errors import ConfigError, first_line
from covidseg.data.layouts.manifest import IMAGE_SUFFIXES, CaseRecord, images_in
from covidseg.data.layouts.public import dataset_json

# nnU-Net label names: what covidseg makes of each (value 0 is the background whatever its name)
LESION_WORDS = ("lesion", "infection", "covid", "ggo", "ground", "consolidation", "opacit")
LUNG_WORDS = {"lung", "lungs", "left", "right", "l", "r"}
NNUNET_CHANNEL = "_0000"  # nnU-Net's file name suffix of the first (here: only) channel


def nnunet_labels(labels, meta_path: Path) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(lesion values, lung values) of an nnU-Net ``labels`` dict ``{name: value}``: names like
    lesion/infection/covid/ggo/ground-glass/consolidation are the lesion (several: covidseg's
    classes in value order), lung/lungs (also left/right lung) the lungs; anything else, a
    region-based label (a list of values) or no lesion label is refused in one line."""
    if not isinstance(labels, dict) or not labels:
        raise ConfigError(f"{meta_path}: 'labels' is not a {{name: value}} mapping")
    lesion, lung = [], []
    for name, value in labels.items():
        if isinstance(value, (list, tuple)):
            raise ConfigError(f"{meta_path}: label {name!r} is region-based ({list(value)}): "
                              "covidseg reads plain label maps (one value per label)")
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{meta_path}: label {name!r} has value {value!r}, not an integer")
        words = set(re.split(r"[^a-z]+", str(name).lower())) - {""}
        if value == 0:
            continue
        if any(w in str(name).lower() for w in LESION_WORDS):
            lesion.append(value)
        elif words and words <= LUNG_WORDS and words & {"lung", "lungs"}:
            lung.append(value)
        else:
            raise ConfigError(f"{meta_path}: label {name!r} (value {value}) is not understood: "
                              "covidseg reads lesion labels (lesion, infection, covid, ggo, "
                              "consolidation), lung/lungs and background 0")
    if not lesion:
        raise ConfigError(f"{meta_path}: no lesion label among {', '.join(map(str, labels))} "
                          "(expected a name like lesion, infection, covid, ggo, consolidation)")
    return tuple(sorted(lesion)), tuple(sorted(set(lung) | set(lesion))) if lung else ()


def _nnunet_meta(root: Path) -> tuple[Path, dict]:
    meta_path, meta = dataset_json(root, "nnU-Net raw dataset")
    missing = [k for k in ("channel_names", "labels", "numTraining", "file_ending")
               if k not in meta]
    if missing:
        raise ConfigError(f"{meta_path}: missing {', '.join(missing)} (nnU-Net v2 dataset.json)")
    channels = meta["channel_names"]
    if not isinstance(channels, dict) or len(channels) != 1:
        shown = ", ".join(map(str, channels.values())) if isinstance(channels, dict) else channels
        raise ConfigError(f"{meta_path}: channel_names has {len(channels)} channels ({shown}): "
                          "covidseg reads single-channel CT")
    if meta["file_ending"] not in IMAGE_SUFFIXES:
        raise ConfigError(f"{meta_path}: file_ending {meta['file_ending']!r} is not a format "
                          f"covidseg reads ({', '.join(IMAGE_SUFFIXES)})")
    return meta_path, meta


def _nnunet_folds(root: Path) -> dict[str, int]:
    """Case id -> fold of ``splits_final.json`` (each fold's ``val`` list), when the raw folder
    has one; refused when the validation sets overlap."""
    path = root / "splits_final.json"
    if not path.exists():
        return {}
    try:
        splits = json.loads(path.read_text())
        folds = {}
        for k, fold in enumerate(splits):
            for case in fold["val"]:
                if case in folds:
                    raise ConfigError(f"{path}: case {case!r} is in the validation set of folds "
                                      f"{folds[case]} and {k}: covidseg's folds partition the "
                                      "training cases")
                folds[case] = k
    except (json.JSONDecodeError, TypeError, KeyError) as exc:
        raise ConfigError(f"{path}: not an nnU-Net splits file (a list of {{'train': [...], "
                          f"'val': [...]}}): {first_line(exc)}") from exc
    return folds


def nnunet(root: Path, **_) -> list[CaseRecord]:
    meta_path, meta = _nnunet_meta(root)
    ending = meta["file_ending"]
    lesion, lung = nnunet_labels(meta["labels"], meta_path)
    values = f"infection={','.join(map(str, lesion))}" + (
        f";lung={','.join(map(str, lung))}" if lung else "")
    folds = _nnunet_folds(root)
    source = root.name

    def cases(folder: str) -> list[tuple[str, Path]]:
        if isinstance(meta.get("dataset"), dict) and folder == "imagesTr":  # explicit file lists
            try:
                return [(case, root / item["images"][0]) for case, item in meta["dataset"].items()]
            except (KeyError, TypeError, IndexError) as exc:
                raise ConfigError(f"{meta_path}: 'dataset' is not {{case: {{'images': [...], "
                                  f"'label': ...}}}} ({first_line(exc)})") from exc
        tail = NNUNET_CHANNEL + ending
        return [(p.name[:-len(tail)], p) for p in images_in(root / folder)
                if p.name.endswith(tail)]

    def record(case, img, label: Path, split, labelled: bool) -> CaseRecord:
        """``labelled``: a training case is, even when its label file is missing (then that
        case alone fails, naming the file); a test case is when labelsTs has its label."""
        lab = str(label) if labelled else None
        return CaseRecord(case, str(img), lab, lab if lung else None, source, labelled, split,
                          label_values=values if labelled else None)

    train = cases("imagesTr")
    if len(train) != meta["numTraining"]:
        raise ConfigError(f"{meta_path}: numTraining is {meta['numTraining']} but imagesTr has "
                          f"{len(train)} cases named <case>{NNUNET_CHANNEL}{ending}")
    listed = meta["dataset"] if isinstance(meta.get("dataset"), dict) else {}
    records = []
    for case, img in train:
        label = root / str(listed[case].get("label")) if case in listed else \
            root / "labelsTr" / f"{case}{ending}"
        records.append(record(case, img, label, f"fold{folds[case]}" if case in folds else None,
                              True))
    for case, img in cases("imagesTs"):
        label = root / "labelsTs" / f"{case}{ending}"
        has = label.exists()  # without a label: an unlabelled image, not part of the test split
        records.append(record(case, img, label, "test" if has else None, has))
    return records
