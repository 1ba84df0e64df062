import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from covidseg.base.errors import ConfigError, MissingInput, MissingSpacing, UnreadableFile
from covidseg.data.layouts import build_manifest, read_manifest, write_manifest
from covidseg.data.readers import read_image, to_canonical
from tests.helpers import (
    fake_covid19_ct_seg,
    fake_mosmed,
    fake_msd_lung,
    fake_nnunet,
    fake_nsclc,
    write_dicom_series,
    write_png_slice,
)


def test_nifti_and_metaimage_roundtrip(phantom_files, tmp_path):
    _, cases = phantom_files
    img = read_image(cases[0]["image"])
    ph = cases[0]["phantom"]
    assert img.GetSize() == ph.image.shape[::-1]
    assert np.allclose(img.GetSpacing(), ph.spacing, atol=1e-4)
    mha = tmp_path / "case.mha"
    sitk.WriteImage(img, str(mha))
    back = read_image(mha)
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(img))


def test_dicom_series_geometry(phantom_files, tmp_path):
    _, cases = phantom_files
    vol = read_image(cases[1]["image"])
    folder = write_dicom_series(vol, tmp_path / "dicom")
    back = read_image(folder)
    assert back.GetSize() == vol.GetSize()
    assert np.allclose(back.GetSpacing(), vol.GetSpacing(), atol=1e-3)
    assert np.allclose(back.GetOrigin(), vol.GetOrigin(), atol=1e-3)
    assert np.array_equal(sitk.GetArrayFromImage(back),
                          sitk.GetArrayFromImage(vol).astype(np.int16))


def test_dicom_without_pixel_spacing(phantom_files, tmp_path):
    _, cases = phantom_files
    folder = write_dicom_series(read_image(cases[1]["image"]), tmp_path / "nospacing",
                                with_spacing=False)
    with pytest.raises(MissingSpacing, match="nospacing: DICOM series has no Pixel Spacing"):
        read_image(folder)


def test_png_slice_is_one_slice_volume(tmp_path):
    p = write_png_slice(np.tile(np.arange(60, dtype=float), (40, 1)) * 4, tmp_path / "s.png")
    img = read_image(p)
    assert img.GetSize() == (60, 40, 1) and img.GetSpacing() == (1.0, 1.0, 1.0)


def test_reader_errors_are_one_line(tmp_path, phantom_files):
    with pytest.raises(MissingInput, match="does not exist"):
        read_image(tmp_path / "nope.nii.gz")
    with pytest.raises(MissingInput, match="empty path"):
        read_image("")
    empty = tmp_path / "empty.nii.gz"
    empty.write_bytes(b"")
    with pytest.raises(UnreadableFile, match="empty"):
        read_image(empty)
    truncated = tmp_path / "truncated.nii.gz"
    raw = gzip.decompress(Path(phantom_files[1][0]["image"]).read_bytes())
    truncated.write_bytes(gzip.compress(raw[: len(raw) // 3]))
    with pytest.raises(UnreadableFile) as exc:
        read_image(truncated)
    assert "truncated" in str(exc.value)
    assert "\n" not in str(exc.value) and str(truncated) in str(exc.value)
    junk = tmp_path / "junk.nii"
    junk.write_bytes(b"not a nifti file at all" * 20)
    with pytest.raises(UnreadableFile, match="junk.nii: not a NIfTI file"):
        read_image(junk)
    cut = tmp_path / "cut.nii.gz"  # the gzip stream itself ends early
    cut.write_bytes(Path(phantom_files[1][0]["image"]).read_bytes()[:3000])
    with pytest.raises(UnreadableFile, match="cut.nii.gz: file is truncated or corrupt"):
        read_image(cut)
    mha = tmp_path / "junk.mha"
    mha.write_bytes(b"ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_SHORT\n"
                    b"ElementDataFile = LOCAL\n\x00\x01")
    with pytest.raises(UnreadableFile, match="junk.mha"):
        read_image(mha)


def test_reorientation_to_lps(phantom_files):
    img = read_image(phantom_files[1][0]["image"])
    flipped = sitk.Flip(img, [True, False, False])  # direction x -> -1 (RPS)
    canon = to_canonical(flipped)
    assert np.allclose(canon.GetDirection(), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert np.array_equal(sitk.GetArrayFromImage(canon), sitk.GetArrayFromImage(img))


def test_covid19_ct_seg_layout(phantom_files, tmp_path):
    root = fake_covid19_ct_seg(tmp_path / "covid", phantom_files[1])
    name, recs = build_manifest(root)
    assert name == "covid19-ct-seg"
    assert [r.case_id for r in recs] == ["coronacases_001", "radiopaedia_4_85506_1"]
    assert all(r.labelled and r.infection and r.lung and r.task == "infection" for r in recs)


def test_mosmed_layout(phantom_files, tmp_path):
    root = fake_mosmed(tmp_path / "mosmed", phantom_files[1])
    name, recs = build_manifest(root)
    by_id = {r.case_id: r for r in recs}
    assert name == "mosmed" and set(by_id) == {"study_0255", "study_0256", "study_0001"}
    assert by_id["study_0255"].labelled and by_id["study_0255"].grade == "CT-1"
    assert not by_id["study_0256"].labelled and by_id["study_0001"].grade == "CT-0"


def test_msd_lung_layout(phantom_files, tmp_path):
    root = fake_msd_lung(tmp_path / "Task06_Lung", phantom_files[1])
    name, recs = build_manifest(root)
    assert name == "msd-lung"
    assert [(r.case_id, r.labelled, r.split, r.task) for r in recs] == [
        ("lung_001", True, "train", "tumour"), ("lung_003", True, "train", "tumour"),
        ("lung_002", False, "test", "tumour")]


def test_nnunet_layout_reads_its_label_map_test_split_and_folds(phantom_files, tmp_path):
    from covidseg.data.masks import read_mask

    cases = phantom_files[1]
    splits = [{"train": ["case_1"], "val": ["case_0"]}, {"train": ["case_0"], "val": ["case_1"]}]
    root = fake_nnunet(tmp_path / "Dataset501_Phantoms", cases, splits=splits)
    name, recs = build_manifest(root)
    assert name == "nnunet"
    assert [(r.case_id, r.labelled, r.split, r.label_values) for r in recs] == [
        ("case_0", True, "fold0", "infection=2;lung=1,2"),
        ("case_1", True, "fold1", "infection=2;lung=1,2"),
        ("case_2", True, "test", "infection=2;lung=1,2"),
        ("case_3", False, None, None)]  # a test image without a label: unlabelled
    assert recs[0].lung == recs[0].infection
    assert recs[0].infection.endswith("labelsTr/case_0.nii.gz")
    # the label map read as covidseg's masks: lesion = label 2, lungs = labels 1 and 2
    image = to_canonical(read_image(recs[0].image))
    infection = read_mask(recs[0].infection, image, recs[0].image, "infection",
                          values=recs[0].values_of("infection"))
    lung = read_mask(recs[0].lung, image, recs[0].image, "lung", values=recs[0].values_of("lung"))
    ph = cases[0]["phantom"]
    assert np.array_equal(infection, ph.infection > 0)
    assert np.array_equal(lung, (ph.lung > 0) | (ph.infection > 0))
    # the MSD layout (dataset.json with modality and training lists) is still MSD
    assert build_manifest(fake_msd_lung(tmp_path / "Task06_Lung", cases))[0] == "msd-lung"
    # lesion labels only (no lung): the label file is the infection mask, no lung mask
    only = fake_nnunet(tmp_path / "Dataset502_Ggo", cases,
                       labels={"background": 0, "ggo": 1, "consolidation": 2})
    r = build_manifest(only, "nnunet")[1][0]
    assert r.lung is None and r.label_values == "infection=1,2" and r.split is None


@pytest.mark.parametrize("change, message", [
    ({"channel_names": {"0": "CT", "1": "PET"}}, "2 channels (CT, PET): covidseg reads single"),
    ({"labels": {"background": 0, "lesion": [1, 2]}}, "label 'lesion' is region-based"),
    ({"labels": {"background": 0, "infection": 1, "vessel": 2}},
     "label 'vessel' (value 2) is not understood"),
    ({"labels": {"background": 0, "lungs": 1}}, "no lesion label among background, lungs"),
    ({"file_ending": ".npz"}, "file_ending '.npz' is not a format"),
    ({"numTraining": 5}, "numTraining is 5 but imagesTr has 2 cases"),
    ({"numTraining": None}, "missing numTraining"),
])
def test_nnunet_layout_refusals_are_one_line_naming_dataset_json(phantom_files, tmp_path, change,
                                                                 message):
    root = fake_nnunet(tmp_path / "Dataset503_Bad", phantom_files[1])
    meta = json.loads((root / "dataset.json").read_text())
    meta.update(change)
    meta = {k: v for k, v in meta.items() if v is not None}
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError) as exc:
        build_manifest(root, "nnunet")
    assert message in str(exc.value) and str(root / "dataset.json") in str(exc.value)
    assert "\n" not in str(exc.value)


def test_nnunet_missing_training_label_fails_that_case_alone(phantom_files, tmp_path):
    from covidseg.config import PreprocessConfig
    from covidseg.stages.preprocess import preprocess_dataset

    root = fake_nnunet(tmp_path / "Dataset504_Gap", phantom_files[1])
    (root / "labelsTr" / "case_1.nii.gz").unlink()
    summary = preprocess_dataset(PreprocessConfig(data=str(root), test_cases=0, folds=0),
                                 progress=False)
    assert summary["n_failed"] == 1 and summary["n_cases"] == 3
    failed = (Path(summary["dataset_path"]) / "failed.csv").read_text()
    assert "labelsTr/case_1.nii.gz: " in failed and "does not exist" in failed


def test_nsclc_layout(phantom_files, tmp_path):
    root = fake_nsclc(tmp_path / "nsclc", phantom_files[1])
    name, recs = build_manifest(root)
    assert name == "nsclc" and [r.case_id for r in recs] == ["LUNG1-001", "LUNG1-002"]
    assert all("effusion" in r.infection and r.lung.endswith("_lung.nii.gz") for r in recs)


def test_glob_layout_pairs_by_stem_and_splits(phantom_files, tmp_path):
    root, _ = phantom_files
    name, recs = build_manifest(root, "glob", images="images/case_[0-2].nii.gz",
                                masks="masks/case_[0-2].nii.gz", test_images="images/case_3.nii.gz",
                                test_masks="masks/case_3.nii.gz", lungs="lungs/*.nii.gz")
    assert name == "glob" and len(recs) == 4
    assert [r.split for r in recs] == [None, None, None, "test"]
    assert all(Path(r.infection).name == Path(r.image).name for r in recs)
    assert all(r.lung for r in recs)
    with pytest.raises(ConfigError, match="no images match"):
        build_manifest(root, "glob", images="nothing/*.nii.gz")


def test_glob_layout_for_2d_slices(tmp_path):
    for i in range(3):
        write_png_slice(np.full((50 + i, 40), 100.0), tmp_path / "img" / f"s{i}.png")
        write_png_slice(np.zeros((50 + i, 40)), tmp_path / "msk" / f"s{i}_mask.png")
    name, recs = build_manifest(tmp_path, images="img/*.png", masks="msk/*.png")
    assert name == "glob" and [Path(r.infection).name for r in recs] == [
        "s0_mask.png", "s1_mask.png", "s2_mask.png"]


def test_manifest_csv_roundtrip(phantom_files, tmp_path):
    _, recs = build_manifest(phantom_files[0], "glob", images="images/*.nii.gz",
                             masks="masks/*.nii.gz")
    write_manifest(recs, tmp_path / "m.csv")
    assert read_manifest(tmp_path / "m.csv") == recs


def test_unknown_layout_and_missing_folder(tmp_path):
    with pytest.raises(ConfigError, match="cannot tell which dataset layout"):
        build_manifest(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        build_manifest(tmp_path / "missing")


def test_every_layout_name_has_its_adapter_and_every_regime_its_meaning():
    """The vocabularies (covidseg.data.vocabulary) are what the registries are keyed by, and what
    the parameters allow."""
    from covidseg.config import FinetuneConfig, PreprocessConfig
    from covidseg.data.layouts import ADAPTERS
    from covidseg.data.splits import REGIME_ALIASES
    from covidseg.data.vocabulary import Layout, Regime

    assert list(ADAPTERS) == list(Layout)
    assert set(REGIME_ALIASES) == set(Regime) and set(REGIME_ALIASES.values()) == {
        Regime.STANDARD, Regime.INVERSE}
    choices = {f: PreprocessConfig.__dataclass_fields__[f].metadata["choices"]
               for f in ("dataset", "lung_method")}
    assert choices == {"dataset": ("auto", *Layout.values()),
                       "lung_method": ("auto", "lungmask", "classical", "provided", "none")}
    assert FinetuneConfig.__dataclass_fields__["regime"].metadata["choices"] == (
        "standard", "inverse", "40-10", "10-40")
