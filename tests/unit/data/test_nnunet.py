"""nnU-Net v2 raw datasets out (``export_nnunet=``) and back in (``dataset=nnunet``); the export
checked by the real nnU-Net (``nnUNetv2_plan_and_preprocess --verify_dataset_integrity``) when
the ``nnunet`` extra is installed."""

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from covidseg.base.errors import ConfigError
from covidseg.config import PreprocessConfig
from covidseg.data.layouts import read_manifest
from covidseg.data.store import PreprocessedDataset
from covidseg.stages.preprocess import check_inputs, preprocess_dataset
from tests.conftest import TINY_DEMO

SMALL = {**TINY_DEMO, "demo_unlabelled": 2, "demo_noncovid": 1}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny demo cohort preprocessed and exported as Dataset501_Phantoms."""
    out = tmp_path_factory.mktemp("nnUNet_raw") / "Dataset501_Phantoms"
    summary = preprocess_dataset(PreprocessConfig(**SMALL, export_nnunet=str(out)),
                                 progress=False)
    return PreprocessedDataset(Path(summary["dataset_path"])), out, summary


def test_export_writes_the_cohort_its_test_set_and_folds(exported):
    ds, out, summary = exported
    meta = json.loads((out / "dataset.json").read_text())
    train = sorted(c for f in ds.splits.folds for c in f)
    assert summary["nnunet"] == {"folder": str(out), "written": True, "n_train": len(train),
                                 "n_test": 2, "n_unlabelled": 2, "n_failed": 0}
    assert meta["channel_names"] == {"0": "CT"} and meta["file_ending"] == ".nii.gz"
    assert meta["labels"] == {"background": 0, "infection": 1}
    assert meta["numTraining"] == len(train) == 4
    assert meta["covidseg"]["auxiliary_left_out"] == ds.splits.auxiliary == ["nodule_000"]
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [f"{c}_0000.nii.gz"
                                                                   for c in train]
    assert sorted(p.name for p in (out / "labelsTs").iterdir()) == [f"{c}.nii.gz"
                                                                   for c in ds.splits.test]
    assert len(list((out / "imagesTs").iterdir())) == 4  # 2 test + 2 unlabelled
    splits = json.loads((out / "splits_final.json").read_text())
    assert [s["val"] for s in splits] == ds.splits.folds
    assert all(sorted(s["train"] + s["val"]) == train for s in splits)
    # images are the input files' values (HU, not normalised), labels the reference masks
    records = {r.case_id: r for r in read_manifest(ds.root / "manifest.csv")}
    c = train[0]
    img = sitk.ReadImage(str(out / "imagesTr" / f"{c}_0000.nii.gz"))
    src = sitk.ReadImage(records[c].image)
    assert np.array_equal(sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(src))
    assert img.GetSpacing() == pytest.approx(src.GetSpacing())
    lab = sitk.ReadImage(str(out / "labelsTr" / f"{c}.nii.gz"))
    assert np.array_equal(sitk.GetArrayFromImage(lab), ds.load_original(c))
    assert lab.GetOrigin() == pytest.approx(img.GetOrigin())


def test_export_read_back_gives_the_same_cases_masks_and_folds(exported):
    ds, out, _ = exported
    again = preprocess_dataset(PreprocessConfig(data=str(out), test_cases=SMALL["test_cases"],
                                                folds=SMALL["folds"]), progress=False)
    back = PreprocessedDataset(Path(again["dataset_path"]))
    assert back.descriptor["dataset"] == "nnunet" and again["n_failed"] == 0
    assert back.splits.test == ds.splits.test and back.splits.test_is_official
    assert back.splits.folds == ds.splits.folds
    assert back.splits.unlabelled == ds.splits.unlabelled
    assert sorted(back.ids()) == sorted(c for c in ds.ids() if c not in ds.splits.auxiliary)
    for c in back.ids(labelled=True):  # preprocessed by covidseg both ways: voxel for voxel
        image, infection, _ = ds.load(c)
        image_b, infection_b, _ = back.load(c)
        assert np.array_equal(infection, infection_b)
        assert np.array_equal(back.load_original(c), ds.load_original(c))
        assert np.allclose(image, image_b, atol=1e-5)


def test_export_again_keeps_the_folder_and_refuses_another(exported, tmp_path):
    ds, out, _ = exported
    from covidseg.data.nnunet import export_nnunet

    assert export_nnunet(ds, out)["written"] is False  # the same dataset: kept as it is
    other = tmp_path / "Dataset502_Other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="Dataset502_Other: folder is not empty"):
        export_nnunet(ds, other)
    with pytest.raises(ConfigError, match="must be named DatasetNNN_Name"):
        check_inputs(PreprocessConfig(export_nnunet=str(tmp_path / "my_export")))


