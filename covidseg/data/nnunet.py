"""A preprocessed cohort out as an nnU-Net v2 raw dataset (``preprocess -P export_nnunet=DIR``),
so that the same cases, test set and folds can be run through nnU-Net as a baseline; the
``nnunet`` layout adapter (:func:`covidseg.data.layouts.nnunet`) reads such a folder back.

What is written into ``DIR`` (named ``DatasetNNN_Name``, as nnU-Net finds datasets by number)::

    dataset.json        channel_names {"0": "CT"} (every case HU; else "zscore"), labels
                        (background, infection — or ground-glass, consolidation with
                        labels=multiclass), numTraining, file_ending ".nii.gz"; under "covidseg"
                        the dataset key, the test and unlabelled ids, the cases left out
    splits_final.json   covidseg's folds: [{"train": [...], "val": [fold k]}, ...] (the standard
                        regime); nnUNetv2_plan_and_preprocess copies it to nnUNet_preprocessed
    imagesTr/<id>_0000.nii.gz, labelsTr/<id>.nii.gz    the labelled cases of the folds
    imagesTs/<id>_0000.nii.gz, labelsTs/<id>.nii.gz    the held-out test cases
    imagesTs/<id>_0000.nii.gz (no label)               the unlabelled COVID cases

Images are the input files as read (values untouched: HU or display values, before covidseg's
resampling and normalisation) on their canonical (LPS) grid; labels are the reference masks
covidseg keeps on that grid (``original.npz``: binarised, or the multiclass map).  Auxiliary
(non-COVID) cases are left out: an nnU-Net dataset has one task.  A case whose input file can no
longer be read is recorded under ``covidseg.failed`` and left out; the others are written.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from covidseg.base.errors import CaseError, ConfigError
from covidseg.data.layouts import NNUNET_CHANNEL, read_manifest
from covidseg.data.readers import read_image, to_canonical
from covidseg.data.store import PreprocessedDataset
from covidseg.data.vocabulary import Labels

log = logging.getLogger("covidseg.preprocess")

DATASET_NAME = re.compile(r"Dataset\d{3}_[A-Za-z0-9][A-Za-z0-9_.-]*")
FILE_ENDING = ".nii.gz"
LABELS = {Labels.BINARY: {"background": 0, "infection": 1},
          Labels.MULTICLASS: {"background": 0, "ground-glass": 1, "consolidation": 2}}


def check_export_folder(folder) -> Path:
    """The export folder, refused in one line unless nnU-Net could find it
    (``DatasetNNN_Name``)."""
    out = Path(folder).expanduser()
    if not DATASET_NAME.fullmatch(out.name):
        raise ConfigError(f"export_nnunet={folder}: the folder must be named DatasetNNN_Name "
                          "(three digits: nnU-Net's dataset id), e.g. "
                          f"{out.parent / 'Dataset501_Covid'}")
    return out


def export_nnunet(ds: PreprocessedDataset, folder) -> dict:
    """Write ``ds`` as the nnU-Net raw dataset ``folder`` (see the module docstring); a folder
    already exported from the same dataset key is kept as it is.  Returns a summary."""
    out = check_export_folder(folder)
    done = _exported_key(out)
    if done == ds.key:
        return _summary(out, json.loads((out / "dataset.json").read_text()), written=False)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: folder is not empty" + (
            f" (exported from dataset {done})" if done else "") + ": export_nnunet= writes a "
            "new nnU-Net dataset folder")
    records = {r.case_id: r for r in read_manifest(ds.root / "manifest.csv")}
    splits = ds.splits
    test, unlabelled = list(splits.test), list(splits.unlabelled)
    train = sorted(c for c, m in ds.cases.items() if m["labelled"] and m["task"] == "infection"
                   and c not in set(test))
    tmp = out.with_name(out.name + f".partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    failed: list[dict] = []
    written: dict[str, list[str]] = {"train": [], "test": [], "unlabelled": []}
    jobs = [(c, "Tr", True, "train") for c in train] + [(c, "Ts", True, "test") for c in test] \
        + [(c, "Ts", False, "unlabelled") for c in unlabelled]
    for case_id, part, labelled, role in jobs:
        try:
            _write_case(ds, records[case_id], tmp, part, labelled)
        except CaseError as exc:
            failed.append({"case_id": case_id, "error": str(exc)})
            log.warning("nnU-Net export: case %s left out: %s", case_id, exc)
            continue
        written[role].append(case_id)
    hu = all(ds.cases[c]["intensity"] == "hu" for ids in written.values() for c in ids)
    labels = ds.descriptor.get("config", {}).get("labels") or Labels.BINARY
    meta = {
        "channel_names": {"0": "CT" if hu else "zscore"},
        "labels": LABELS[Labels(labels)],
        "numTraining": len(written["train"]),
        "file_ending": FILE_ENDING,
        "name": out.name.split("_", 1)[1],
        "description": f"exported by covidseg from preprocessed dataset {ds.key}",
        "covidseg": {"dataset_key": ds.key, "test": written["test"],
                     "unlabelled": written["unlabelled"],
                     "auxiliary_left_out": list(splits.auxiliary or []), "failed": failed},
    }
    tmp.mkdir(parents=True, exist_ok=True)
    kept = set(written["train"])
    folds = [sorted(c for c in f if c in kept) for f in splits.folds]
    if folds:
        (tmp / "splits_final.json").write_text(json.dumps(
            [{"train": sorted(c for j, f in enumerate(folds) if j != k for c in f), "val": fold}
             for k, fold in enumerate(folds)], indent=1))
    (tmp / "dataset.json").write_text(json.dumps(meta, indent=1))
    if out.exists():
        out.rmdir()  # empty (checked above)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)
    return _summary(out, meta, written=True)


def _write_case(ds: PreprocessedDataset, rec, folder: Path, part: str, labelled: bool) -> None:
    """The case's image (canonical grid, values as read) and, when ``labelled``, its reference
    mask on that grid."""
    image = to_canonical(read_image(rec.image))
    label = None
    if labelled:
        mask = ds.load_original(rec.case_id)
        if mask is None:
            raise CaseError(ds.case_dir(rec.case_id), "no original.npz: the dataset was "
                            "preprocessed by an older covidseg; preprocess it again", rec.case_id)
        if mask.shape != image.GetSize()[::-1]:
            raise CaseError(rec.image, f"image grid {image.GetSize()[::-1]} differs from the "
                            f"preprocessed reference mask's {mask.shape}", rec.case_id)
        label = sitk.GetImageFromArray(mask.astype(np.uint8))
        label.CopyInformation(image)
    (folder / f"images{part}").mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(folder / f"images{part}" / f"{rec.case_id}{NNUNET_CHANNEL}"
                                                          f"{FILE_ENDING}"), useCompression=True)
    if label is not None:
        (folder / f"labels{part}").mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(label, str(folder / f"labels{part}" / f"{rec.case_id}{FILE_ENDING}"),
                        useCompression=True)


def _exported_key(out: Path) -> str | None:
    try:
        return json.loads((out / "dataset.json").read_text())["covidseg"]["dataset_key"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _summary(out: Path, meta: dict, written: bool) -> dict:
    extra = meta.get("covidseg", {})
    return {"folder": str(out), "written": written, "n_train": meta["numTraining"],
            "n_test": len(extra.get("test", [])), "n_unlabelled": len(extra.get("unlabelled", [])),
            "n_failed": len(extra.get("failed", []))}
