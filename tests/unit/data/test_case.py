"""The typed case of preprocessing: CaseMeta writes exactly the documented keys, in order, and the
steps reproduce, bit for bit, the dataset that the one 120-line ``preprocess_case`` built before
they were split out (issue 17)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from covidseg.config import PreprocessConfig
from covidseg.data import preprocess as build
from covidseg.data.case import CaseMeta
from covidseg.data.layouts import CaseRecord, read_manifest
from covidseg.data.steps import preprocess_case
from covidseg.stages.preprocess import preprocess_dataset, preprocess_settings

# meta.json / dataset.json "cases": every case has these, in this order (class_pixels follows
# with labels=multiclass)
KEYS = ["case_id", "source", "labelled", "split", "grade", "task", "has_truth", "slice_image",
        "slice_fit", "labels", "canonical_geometry", "intensity", "looked_like_hu", "lung_method",
        "lung_note", "shape", "spacing", "spacing_in", "geometry", "crop_corner_yx",
        "lung_lost_by_crop", "infection_in_lung", "lesion_fraction", "lung_volume_ml",
        "lesion_volume_ml", "lesion_pixels", "lesion_slices", "before_mean", "before_std",
        "before_p1", "before_p99", "hist_before", "hist_after", "norm_mean", "norm_std"]

# computed with the code before the split (commit 1cad469, ``preprocess_case`` in one function),
# the code digest fixed: the key of inputs + settings, and digests of what was written
FIXED = dict(demo_labelled=2, demo_unlabelled=0, demo_noncovid=0, demo_size=64, demo_depth=16,
             test_cases=0, folds=2)
FIXED_KEY = "c52f262664265cca4d24"
FIXED_CASES = "1fc1696367c1f4d7"  # sha256 of json.dumps(dataset.json's "cases")
FIXED_FILES = "38ed411b25935ecf"  # sha256 of cases/*/* (name + bytes, in path order)


def test_case_meta_keys_are_the_documented_ones(phantom_files, tmp_path):
    assert [f.name for f in fields(CaseMeta)] == KEYS + ["class_pixels"]
    case = phantom_files[1][0]
    rec = CaseRecord("c", str(case["image"]), str(case["infection"]), str(case["lung"]))
    assert list(preprocess_case(rec, preprocess_settings(PreprocessConfig()), None).meta) == KEYS
    # a 0/1/2 label map: class_pixels (ground-glass, consolidation) is added last
    mask = sitk.ReadImage(str(case["infection"]))
    labels = sitk.GetArrayFromImage(mask).astype(np.uint8)
    labels[:, :, labels.shape[2] // 2:] *= 2
    multi = sitk.GetImageFromArray(labels)
    multi.CopyInformation(mask)
    sitk.WriteImage(multi, str(tmp_path / "multi.nii.gz"))
    rec.infection = str(tmp_path / "multi.nii.gz")
    out = preprocess_case(rec, preprocess_settings(PreprocessConfig(labels="multiclass")), None)
    assert list(out.meta) == KEYS + ["class_pixels"]
    assert out.meta["class_pixels"] == [int((out.infection == k).sum()) for k in (1, 2)]
    assert all(out.meta["class_pixels"])


def test_steps_reproduce_the_dataset_of_a_fixed_phantom_config(tmp_path, monkeypatch):
    monkeypatch.setenv("COVIDSEG_CACHE", str(tmp_path))
    monkeypatch.setattr(build, "code_digest", lambda: "FIXED")  # any code change changes it
    monkeypatch.setattr(build, "find_lungmask_weights", lambda *a: None)  # none on this machine
    summary = preprocess_dataset(PreprocessConfig(**FIXED), progress=False)
    assert summary["key"] == FIXED_KEY
    root = Path(summary["dataset_path"])
    cases = json.loads((root / "dataset.json").read_text())["cases"]
    assert hashlib.sha256(json.dumps(cases).encode()).hexdigest()[:16] == FIXED_CASES
    h = hashlib.sha256()
    for p in sorted((root / "cases").rglob("*")):
        if p.is_file():
            h.update(p.name.encode())
            h.update(p.read_bytes())
    assert h.hexdigest()[:16] == FIXED_FILES
    # and a fresh preprocess of each case gives the metadata the dataset stored
    for rec, stored in zip(read_manifest(root / "manifest.csv"), cases):
        fresh = preprocess_case(rec, preprocess_settings(PreprocessConfig(**FIXED)), None).meta
        assert json.loads(json.dumps(fresh, default=float)) == stored


def test_a_stored_case_reads_back_as_case_meta_and_writes_the_same_json():
    stored = {k: None for k in KEYS} | {"case_id": "c0", "shape": [3, 8, 8], "has_truth": True,
                                        "class_pixels": [4, 2]}
    meta = CaseMeta.from_json(json.loads(json.dumps(stored)))
    assert meta.shape == [3, 8, 8] and meta.has_truth and meta.class_pixels == [4, 2]
    assert json.dumps(meta.to_json()) == json.dumps(stored)
    older = {k: v for k, v in stored.items() if k not in ("canonical_geometry", "class_pixels")}
    back = CaseMeta.from_json({**older, "from_a_later_version": 1})
    assert back.canonical_geometry is None and list(back.to_json()) == KEYS
