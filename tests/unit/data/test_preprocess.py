import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi

from covidseg.base.errors import CaseError, ConfigError, EmptyMask, MissingInput, NotHounsfield
from covidseg.config import PreprocessConfig
from covidseg.data.layouts import CaseRecord, build_manifest
from covidseg.data.phantom import hu_to_display, make_phantom, write_phantom
from covidseg.data.splits import fold_split, make_splits
from covidseg.data.steps import preprocess_case
from covidseg.data.store import PreprocessedDataset
from covidseg.stages.preprocess import (
    preprocess_dataset,
    preprocess_records,
    preprocess_settings,
)
from tests.helpers import PATIENT_ID, PATIENT_NAME, write_dicom_series, write_png_slice


def _cfg(**kw):
    return PreprocessConfig(**kw)


def _prep(**kw):
    """How preprocess_case preprocesses, as preprocess's parameters ``kw`` say."""
    return preprocess_settings(PreprocessConfig(**kw))


def _rec(case, i=0, **kw):
    return CaseRecord(f"case_{i}", str(case["image"]), str(case["infection"]), str(case["lung"]),
                      "test", True, **kw)


def test_phantom_volume_matches_spec_numbers(phantom_files):
    case = phantom_files[1][0]
    ph = case["phantom"]
    out = preprocess_case(_rec(case), _prep(), weights=None)
    m = out.meta
    assert m["spacing"][:2] == [1.0, 1.0] and m["spacing"][2] == pytest.approx(ph.spacing[2])
    expected_xy = round(ph.image.shape[1] * ph.spacing[0])
    assert out.image.shape == (ph.image.shape[0], expected_xy, expected_xy)
    assert out.image.dtype == np.float32
    lung = out.lung
    assert lung.any() and (~lung).any()
    assert np.all(out.image[~lung] == 0.0)  # background exactly 0
    assert abs(float(out.image[lung].mean())) < 1e-4
    assert abs(float(out.image[lung].std()) - 1.0) < 1e-3
    assert m["intensity"] == "hu" and m["lung_method"] == "classical"
    assert m["infection_in_lung"] > 0.8
    # infection mask resampled with nearest neighbour: still binary, same volume within 15 %
    assert set(np.unique(out.infection)) <= {False, True}
    vol_in = ph.infection.sum() * np.prod(ph.spacing)
    vol_out = out.infection.sum() * m["spacing"][2]
    assert vol_out == pytest.approx(vol_in, rel=0.15)


def test_window_clip_happens_before_zscore(phantom_files):
    case = phantom_files[1][2]
    out = preprocess_case(_rec(case), _prep(window_min=-1000, window_max=-500), weights=None)
    lung = out.lung
    # clipping at -500 HU caps the z-scores: the largest equals the clipped maximum
    assert out.image[lung].max() == pytest.approx(
        (-500 - out.meta["norm_mean"]) / out.meta["norm_std"], rel=1e-4)


def test_intensity_auto_is_per_case_and_hu_on_display_values_is_an_error(tmp_path):
    hu = make_phantom(41, size=64, depth_mm=16)
    disp = make_phantom(42, size=64, depth_mm=16, hu=False)
    write_phantom(hu, tmp_path / "hu.nii.gz", tmp_path / "hu_m.nii.gz")
    write_phantom(disp, tmp_path / "disp.nii.gz", tmp_path / "disp_m.nii.gz")
    # the same display values scaled to 0…4095 (12-bit scanner values, not HU, not 8-bit)
    raw = sitk.Cast(sitk.ReadImage(str(tmp_path / "disp.nii.gz")), sitk.sitkFloat32) * 16.0
    sitk.WriteImage(raw, str(tmp_path / "raw.nii.gz"))
    rec_hu = CaseRecord("hu", str(tmp_path / "hu.nii.gz"), str(tmp_path / "hu_m.nii.gz"))
    rec_disp = CaseRecord("disp", str(tmp_path / "disp.nii.gz"), str(tmp_path / "disp_m.nii.gz"))
    rec_raw = CaseRecord("raw", str(tmp_path / "raw.nii.gz"), str(tmp_path / "disp_m.nii.gz"))
    a = preprocess_case(rec_hu, _prep(intensity="auto"), None)
    b = preprocess_case(rec_disp, _prep(intensity="auto"), None)
    r = preprocess_case(rec_raw, _prep(intensity="auto"), None)
    assert (a.meta["intensity"], b.meta["intensity"], r.meta["intensity"]) == (
        "hu", "display", "image")
    # 8-bit display values: one fixed map for every image, (v - 127.5) / 63.75, lungs kept
    assert b.meta["lung_method"] == "classical" and b.lung.any()
    assert (b.meta["norm_mean"], b.meta["norm_std"]) == (127.5, 63.75)
    assert abs(float(b.image[b.lung].mean())) > 0.05 and np.all(b.image[~b.lung] == 0)
    # the same slices 20 grey levels darker come out 20 / 63.75 lower (a per-image z-score would
    # remove the shift): every image is mapped alike
    dark = sitk.Maximum(sitk.Cast(sitk.ReadImage(str(tmp_path / "disp.nii.gz")), sitk.sitkFloat32)
                        - 20.0, 0.0)
    sitk.WriteImage(dark, str(tmp_path / "dark.nii.gz"))
    write_phantom(disp, tmp_path / "unused.nii.gz", lung_path=tmp_path / "lung.nii.gz",
                  image=False)
    lungs = {"lung": str(tmp_path / "lung.nii.gz")}
    d0 = preprocess_case(CaseRecord("d0", str(tmp_path / "disp.nii.gz"), **lungs),
                         _prep(lung_method="provided"), None)
    d1 = preprocess_case(CaseRecord("d1", str(tmp_path / "dark.nii.gz"), **lungs),
                         _prep(lung_method="provided"), None)
    assert d1.meta["intensity"] == "display"
    inner = ndi.binary_erosion(d0.lung, iterations=2)
    assert inner.sum() > 100
    assert np.allclose(d1.image[inner], d0.image[inner] - 20 / 63.75, atol=1e-4)
    # any other non-HU values: z-scored per image
    assert abs(float(r.image[r.lung].mean())) < 1e-4 and np.all(r.image[~r.lung] == 0)
    with pytest.raises(NotHounsfield, match=r"disp\.nii\.gz: intensities are not Hounsfield units"):
        preprocess_case(rec_disp, _prep(intensity="hu"), None)
    with pytest.raises(NotHounsfield, match=r"raw\.nii\.gz: intensities are not 8-bit display"):
        preprocess_case(rec_raw, _prep(intensity="display"), None)
    c = preprocess_case(rec_hu, _prep(intensity="image"), None)
    assert c.meta["intensity"] == "image"


def test_lung_methods_provided_none_and_empty(phantom_files):
    case = phantom_files[1][1]
    prov = preprocess_case(_rec(case), _prep(lung_method="provided"), None)
    assert prov.meta["lung_method"] == "provided"
    none = preprocess_case(_rec(case), _prep(lung_method="none"), None)
    assert none.meta["lung_method"] == "none" and none.lung is None
    with pytest.raises(MissingInput, match="lung_method=provided but this case has no lung mask"):
        preprocess_case(CaseRecord("x", str(case["image"])), _prep(lung_method="provided"), None)


def test_empty_lung_extraction_is_reported(tmp_path):
    img = sitk.GetImageFromArray(np.full((4, 32, 32), 40, np.int16))  # soft tissue only
    img.SetSpacing((0.8, 0.8, 2.0))
    sitk.WriteImage(img, str(tmp_path / "solid.nii.gz"))
    with pytest.raises(EmptyMask,
                       match=r"solid\.nii\.gz: lung extraction \(classical\) found no lung"):
        preprocess_case(CaseRecord("s", str(tmp_path / "solid.nii.gz")), _prep(intensity="image"),
                        None)


def _lungmask_weights(path: Path) -> Path:
    """A lungmask R231-layout state dict whose head always answers 'lung 1'."""
    import torch
    from lungmask.resunet import UNet

    net = UNet(n_classes=3, padding=True, depth=5, up_mode="upsample", batch_norm=True,
               residual=False)
    sd = net.state_dict()
    last_w = [k for k in sd if k.endswith("weight")][-1]
    last_b = [k for k in sd if k.endswith("bias")][-1]
    sd[last_w].zero_()
    sd[last_b].copy_(torch.tensor([0.0, 10.0, 0.0]))
    torch.save(sd, path)
    return path


def test_lungmask_with_local_weights_only_on_hu_cases(tmp_path):
    weights = _lungmask_weights(tmp_path / "r231.pth")
    hu = make_phantom(51, size=64, depth_mm=4)
    disp = make_phantom(52, size=64, depth_mm=4, hu=False)
    write_phantom(hu, tmp_path / "hu.nii.gz")
    write_phantom(disp, tmp_path / "disp.nii.gz")
    before = list(warnings.filters)
    a = preprocess_case(CaseRecord("hu", str(tmp_path / "hu.nii.gz")),
                        _prep(lung_method="lungmask"), weights)
    assert list(warnings.filters) == before  # lungmask's global warning filter was undone
    # the head answers "lung" everywhere: lungmask returns its whole body crop as lung
    assert a.meta["lung_method"] == "lungmask" and a.lung.mean() > 0.3
    b = preprocess_case(CaseRecord("disp", str(tmp_path / "disp.nii.gz")),
                        _prep(lung_method="lungmask"), weights)
    assert b.meta["lung_method"] == "classical" and "not HU" in b.meta["lung_note"]
    c = preprocess_case(CaseRecord("hu", str(tmp_path / "hu.nii.gz")), _prep(lung_method="auto"),
                        weights)
    assert c.meta["lung_method"] == "lungmask"


def test_image_size_crops_around_the_lungs(phantom_files):
    case = phantom_files[1][0]
    out = preprocess_case(_rec(case), _prep(image_size=32), None)
    assert out.image.shape[1:] == (32, 32) and out.infection.shape == out.image.shape
    assert 0 < out.meta["lung_lost_by_crop"] < 1
    big = preprocess_case(_rec(case), _prep(image_size=96), None)
    assert big.image.shape[1:] == (96, 96) and big.meta["lung_lost_by_crop"] == 0
    assert np.all(big.image[~big.lung] == 0)


def test_2d_slice_images_resized_with_display_mode(tmp_path):
    ph = make_phantom(61, size=80, depth_mm=4, hu=False)
    for i, (h, w) in enumerate([(80, 80), (60, 80), (80, 50)]):
        write_png_slice(ph.image[0][:h, :w], tmp_path / "img" / f"s{i}.png")
        write_png_slice(ph.infection[0][:h, :w] * 255.0, tmp_path / "msk" / f"s{i}_mask.png")
    _, recs = build_manifest(tmp_path, images="img/*.png", masks="msk/*.png")
    outs = [preprocess_case(r, _prep(image_size=64), None) for r in recs]
    for o in outs:
        assert o.image.shape == (1, 64, 64) and o.infection.shape == (1, 64, 64)
        assert o.meta["intensity"] == "display" and o.meta["lung_method"] == "none"
        assert o.meta["slice_image"] and o.meta["spacing"] is None
    assert outs[0].infection.sum() > 0


def test_dataset_cache_hit_and_splits(phantom_files):
    root, _ = phantom_files
    cfg = _cfg(data=str(root), dataset="glob", images="images/*.nii.gz", masks="masks/*.nii.gz",
               test_cases=1, folds=3)
    first = preprocess_dataset(cfg, progress=False)
    second = preprocess_dataset(cfg, progress=False)
    assert not first["cache_hit"] and second["cache_hit"]
    assert first["key"] == second["key"] and first["n_cases"] == 4
    ds = PreprocessedDataset(Path(first["dataset_path"]))
    assert len(ds.splits.test) == 1 and len(ds.splits.folds) == 3
    assert sorted(ds.splits.test + sum(ds.splits.folds, [])) == sorted(ds.ids(labelled=True))
    image, infection, lung = ds.load("case_0")
    assert image.shape == infection.shape == lung.shape
    for name in ("spacing_per_source.png", "intensity_histogram_before_after.png"):
        assert (ds.root / "figures" / name).stat().st_size > 5000
    assert list((ds.root / "figures").glob("lung_filtering_3views_volume_*.png"))
    fp = json.loads((ds.root / "fingerprint.json").read_text())
    assert fp["n_cases"] == 4 and fp["spacing_xy"]["min"] >= 0.6
    assert fp["lesion_fraction"]["mean"] > 0
    third = preprocess_dataset(PreprocessConfig(**{**cfg.__dict__, "window_max": 200.0}),
                               progress=False)
    assert third["key"] != first["key"] and not third["cache_hit"]


def test_splits_are_reproducible_and_regimes():
    ids = [f"c{i:02d}" for i in range(70)]
    s1, s2 = make_splits(ids, 20, 5, seed=3), make_splits(list(reversed(ids)), 20, 5, seed=3)
    assert s1 == s2 and len(s1.test) == 20 and [len(f) for f in s1.folds] == [10] * 5
    assert make_splits(ids, 20, 5, seed=4).test != s1.test
    train, val = fold_split(s1, 2, "40-10")
    assert len(train) == 40 and len(val) == 10 and not set(train) & set(val)
    train, val = fold_split(s1, 2, "10-40")
    assert len(train) == 10 and len(val) == 40 and not set(val) & set(s1.test)
    official = make_splits(ids, 20, 5, seed=3, official_test=ids[:7])
    assert official.test == ids[:7] and official.test_is_official
    with pytest.warns(UserWarning, match="test set reduced"):
        small = make_splits(ids[:6], 20, 5)
    assert len(small.test) == 1 and all(len(f) == 1 for f in small.folds)


def _bad_inputs(tmp_path: Path, good_case):
    """One good case and one case for every kind of bad input."""
    import gzip

    d = tmp_path / "bad"
    d.mkdir()
    ph = good_case["phantom"]
    recs = [CaseRecord("good", str(good_case["image"]), str(good_case["infection"]))]
    raw = gzip.decompress(Path(good_case["image"]).read_bytes())
    (d / "truncated.nii.gz").write_bytes(gzip.compress(raw[: len(raw) // 2]))
    recs.append(CaseRecord("truncated", str(d / "truncated.nii.gz")))
    small = sitk.GetImageFromArray(ph.infection[:, :32, :32])
    small.SetSpacing(ph.spacing)
    sitk.WriteImage(small, str(d / "shape_mask.nii.gz"))
    recs.append(CaseRecord("shape", str(good_case["image"]), str(d / "shape_mask.nii.gz")))
    moved = sitk.ReadImage(str(good_case["infection"]))
    moved.SetSpacing((ph.spacing[0] * 1.5, ph.spacing[1] * 1.5, ph.spacing[2]))
    sitk.WriteImage(moved, str(d / "geometry_mask.nii.gz"))
    recs.append(CaseRecord("geometry", str(good_case["image"]), str(d / "geometry_mask.nii.gz")))
    every_97th = np.arange(ph.image.size).reshape(ph.image.shape) % 97 == 0
    nan = sitk.GetImageFromArray(np.where(every_97th, np.nan, ph.image).astype(np.float32))
    nan.SetSpacing(ph.spacing)
    sitk.WriteImage(nan, str(d / "nan.nii.gz"))
    recs.append(CaseRecord("nan", str(d / "nan.nii.gz")))
    labels = sitk.ReadImage(str(good_case["infection"])) * 3
    sitk.WriteImage(labels, str(d / "labels_mask.nii.gz"))
    recs.append(CaseRecord("nonbinary", str(good_case["image"]), str(d / "labels_mask.nii.gz")))
    disp = sitk.GetImageFromArray(hu_to_display(ph.image))
    disp.SetSpacing(ph.spacing)
    sitk.WriteImage(disp, str(d / "display.nii.gz"))
    recs.append(CaseRecord("nothu", str(d / "display.nii.gz")))
    recs.append(CaseRecord("emptypath", ""))
    recs.append(CaseRecord("missing", str(d / "gone.nii.gz")))
    # a 64² volume with 200 mm pixels: its 1 mm grid would be 12,800² a slice (~5 GB)
    huge = sitk.ReadImage(str(good_case["image"]))
    huge.SetSpacing((200.0, 200.0, ph.spacing[2]))
    sitk.WriteImage(huge, str(d / "spacing200.nii.gz"))
    recs.append(CaseRecord("spacing200", str(d / "spacing200.nii.gz")))
    dot = sitk.GetImageFromArray(np.full((1, 1, 1), -700, np.int16))  # a 1 x 1 image
    sitk.WriteImage(dot, str(d / "dot.nii.gz"))
    dot_mask = sitk.GetImageFromArray(np.ones((1, 1, 1), np.uint8))
    sitk.WriteImage(dot_mask, str(d / "dot_mask.nii.gz"))
    recs.append(CaseRecord("dot", str(d / "dot.nii.gz"), str(d / "dot_mask.nii.gz")))
    recs.append(CaseRecord("good2", str(good_case["image"])))
    return recs


EXPECTED_FAILURES = {
    "truncated": ("unreadable file", "truncated.nii.gz: file is truncated"),
    "shape": ("shape mismatch", "shape_mask.nii.gz: mask size (32, 32,"),
    "geometry": ("geometry mismatch", "geometry_mask.nii.gz: mask spacing"),
    "nan": ("NaN values", "nan.nii.gz: "),
    "nonbinary": ("non-binary mask",
                  "labels_mask.nii.gz: infection mask is not binary (values 0, 3)"),
    "nothu": ("not HU", "display.nii.gz: intensities are not Hounsfield units"),
    "emptypath": ("missing input", "<empty path>: no file given (empty path)"),
    "missing": ("missing input", "gone.nii.gz: file does not exist"),
    "spacing200": ("implausible geometry", "spacing200.nii.gz: field of view 12800 x 12800 mm"),
    "dot": ("implausible geometry", "dot.nii.gz: 1 x 1 pixels in-plane, smaller than min_size=32"),
}


def test_bad_inputs_are_recorded_and_the_rest_processed(tmp_path, phantom_files):
    recs = _bad_inputs(tmp_path, phantom_files[1][3])
    summary = preprocess_records(recs, _cfg(intensity="hu", folds=0, test_cases=0), progress=False)
    assert summary["n_cases"] == 2 and summary["n_failed"] == len(EXPECTED_FAILURES)
    root = Path(summary["dataset_path"])
    with open(root / "failed.csv") as fh:
        failed = {r["case_id"]: r for r in csv.DictReader(fh)}
    assert set(failed) == set(EXPECTED_FAILURES)
    for cid, (kind, text) in EXPECTED_FAILURES.items():
        assert failed[cid]["kind"] == kind, cid
        assert text in failed[cid]["error"], (cid, failed[cid]["error"])
        assert "\n" not in failed[cid]["error"]
    assert failed["nan"]["error"].endswith("voxels are NaN or infinite")
    ds = PreprocessedDataset(root)
    assert sorted(ds.cases) == ["good", "good2"]


def test_strict_stops_but_keeps_what_was_written(tmp_path, phantom_files, monkeypatch):
    """In a cache of its own (no other test's datasets to find): the strict run stops at the
    second case, leaves the first one finished (its meta.json) and no dataset; a non-strict
    re-run reuses that case instead of recomputing it and completes the dataset."""
    from covidseg.base.paths import cache_root

    monkeypatch.setenv("COVIDSEG_CACHE", str(tmp_path / "cache"))
    recs = _bad_inputs(tmp_path, phantom_files[1][3])
    assert [r.case_id for r in recs[:2]] == ["good", "truncated"]
    with pytest.raises(CaseError, match="truncated.nii.gz: file is truncated"):
        preprocess_records(recs, _cfg(intensity="hu", strict=True, folds=0, test_cases=0),
                           progress=False)
    datasets = list((cache_root() / "preprocessed").iterdir())
    assert len(datasets) == 1 and not (datasets[0] / "dataset.json").exists()
    done = sorted(p.parent.name for p in datasets[0].glob("cases/*/meta.json"))
    assert done == ["good"]
    meta = datasets[0] / "cases" / "good" / "meta.json"
    written = meta.stat().st_mtime_ns
    summary = preprocess_records(recs, _cfg(intensity="hu", folds=0, test_cases=0), progress=False)
    assert Path(summary["dataset_path"]) == datasets[0] and not summary["cache_hit"]
    assert summary["n_cases"] == 2 and summary["n_failed"] == len(EXPECTED_FAILURES)
    assert meta.stat().st_mtime_ns == written  # resumed, not recomputed


def test_dicom_input_leaks_no_header_values(tmp_path, phantom_files):
    vol = sitk.ReadImage(str(phantom_files[1][0]["image"]))
    folder = write_dicom_series(vol, tmp_path / "series" / "patient_scan")
    summary = preprocess_records([CaseRecord("scan1", str(folder))], _cfg(folds=0, test_cases=0),
                                 progress=False)
    root = Path(summary["dataset_path"])
    meta = json.loads((root / "cases" / "scan1" / "meta.json").read_text())
    assert meta["geometry"]["spacing"][0] == pytest.approx(vol.GetSpacing()[0], abs=1e-3)
    for f in root.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert PATIENT_NAME.encode() not in data and PATIENT_ID.encode() not in data, f


def test_demo_unlabelled_truth_is_stored_apart_and_never_loaded_for_training():
    """The oracle truth of the unlabelled phantoms goes through the same geometry as a mask, is
    stored as truth.npy, and ``load`` (what every training stage reads) never returns it."""
    import SimpleITK as sitk

    from covidseg.config import PreprocessConfig
    from covidseg.data.layouts import read_manifest
    from covidseg.data.store import PreprocessedDataset
    from covidseg.stages.preprocess import preprocess_dataset
    from tests.conftest import TINY_DEMO

    summary = preprocess_dataset(PreprocessConfig(**{**TINY_DEMO, "demo_noncovid": 0}),
                                 progress=False)
    ds = PreprocessedDataset(Path(summary["dataset_path"]))
    unl = ds.splits.unlabelled
    assert len(unl) == TINY_DEMO["demo_unlabelled"]
    for c in ds.ids():
        image, infection, _ = ds.load(c)
        truth = ds.load_truth(c)
        if c in unl:
            assert infection is None and truth is not None and ds.cases[c]["has_truth"]
            assert truth.shape == image.shape and truth.any()
        else:
            assert truth is None and not ds.cases[c]["has_truth"]
    # the stored truth is the phantom's lesion mask resampled to the 1 mm grid: same volume in
    # ml as the file's, within the resampling error
    records = {r.case_id: r for r in read_manifest(ds.root / "manifest.csv")}
    for c in unl:
        ref = sitk.ReadImage(records[c].truth)
        ml_file = sitk.GetArrayFromImage(ref).sum() * np.prod(ref.GetSpacing()) / 1000
        sp = ds.cases[c]["spacing"]
        ml_stored = np.asarray(ds.load_truth(c)).sum() * sp[0] * sp[1] * sp[2] / 1000
        assert ml_stored == pytest.approx(ml_file, rel=0.15)


def test_sources_combine_two_datasets_with_their_tasks_and_roles(tmp_path, phantom_files):
    """COVID volumes (the phantom folder as glob) + non-COVID nodule volumes (an MSD-like second
    source, auxiliary) + an unlabelled third: one dataset, one fingerprint, one split."""
    covid_root, _ = phantom_files
    other = tmp_path / "noncovid"
    for i in range(2):
        ph = make_phantom(300 + i, size=64, depth_mm=24, kind="noncovid", centre="C")
        write_phantom(ph, other / "img" / f"n_{i}.nii.gz", other / "lbl" / f"n_{i}.nii.gz",
                      other / "lung" / f"n_{i}.nii.gz")
    sources = tmp_path / "sources.yaml"
    sources.write_text(f"""
sources:
  - name: covid
    data: {covid_root}
    dataset: glob
    images: "images/case_[0-1].nii.gz"
    masks: "masks/*.nii.gz"
    lungs: "lungs/*.nii.gz"
    role: labelled            # never drawn into the test set
  - name: covid2
    data: {covid_root}
    dataset: glob
    images: "images/case_2.nii.gz"
    masks: "masks/*.nii.gz"
    lungs: "lungs/*.nii.gz"
  - name: msd
    data: noncovid            # relative to the sources file
    dataset: glob
    images: "img/*.nii.gz"
    masks: "lbl/*.nii.gz"
    lungs: "lung/*.nii.gz"
    task: tumour
    role: auxiliary
  - name: extra
    data: {covid_root}
    dataset: glob
    images: "images/case_3.nii.gz"
    masks: "masks/case_3.nii.gz"
    lungs: "lungs/*.nii.gz"
    role: unlabelled
""")
    cfg = _cfg(sources=str(sources), test_cases=1, folds=2, lung_method="provided")
    out = preprocess_dataset(cfg, progress=False)
    ds = PreprocessedDataset(Path(out["dataset_path"]))
    assert sorted(ds.ids()) == ["covid2__case_2", "covid__case_0", "covid__case_1",
                                "extra__case_3", "msd__n_0", "msd__n_1"]
    assert ds.splits.auxiliary == ["msd__n_0", "msd__n_1"]
    assert ds.splits.unlabelled == ["extra__case_3"]
    assert ds.splits.test == ["covid2__case_2"]  # the only one not kept out of it
    assert sorted(sum(ds.splits.folds, [])) == ["covid__case_0", "covid__case_1"]
    fp = json.loads((ds.root / "fingerprint.json").read_text())
    assert fp["tasks"] == {"infection": 3, "tumour": 2}
    assert set(fp["per_source"]) == {"covid", "covid2", "msd", "extra"}
    assert not ds.cases["extra__case_3"]["labelled"] and ds.cases["msd__n_0"]["task"] == "tumour"
    # a second file with one source changed is another dataset
    sources.write_text(sources.read_text().replace("task: tumour", "task: effusion"))
    again = preprocess_dataset(cfg, progress=False)
    assert again["key"] != out["key"]


def test_bad_sources_files_say_what_is_wrong(tmp_path):
    bad = tmp_path / "s.yaml"
    for text, msg in (("- dataset: glob\n", "source 1 has no data: folder"),
                      ("- data: x\n  colour: red\n", r"unknown keys \['colour'\]"),
                      ("- data: x\n  task: lungs\n", "task=.lungs. is not one of"),
                      ("{a: [", "not YAML/JSON")):
        bad.write_text(text)
        with pytest.raises(ConfigError, match=msg) as e:
            preprocess_dataset(_cfg(sources=str(bad)), progress=False)
        assert str(bad) in str(e.value)
    with pytest.raises(ConfigError, match="sources file does not exist"):
        preprocess_dataset(_cfg(sources=str(tmp_path / "none.yaml")), progress=False)
    bad.write_text('{"sources": [{"data": "nowhere"}]}')  # JSON; the folder is missing
    with pytest.raises(ConfigError,
                       match=r"s.yaml: source 1: .*nowhere: data folder does not exist"):
        preprocess_dataset(_cfg(sources=str(bad)), progress=False)
    bad.write_text("- data: .\n")
    with pytest.raises(ConfigError, match="applies to one data folder"):
        preprocess_dataset(_cfg(sources=str(bad), task="tumour"), progress=False)


def test_cases_kept_out_of_the_test_set():
    ids = [f"c{i}" for i in range(10)]
    s = make_splits(ids, 3, 2, seed=1, not_test=ids[:6])
    assert len(s.test) == 3 and not set(s.test) & set(ids[:6])
    assert sorted(s.test + sum(s.folds, [])) == ids
