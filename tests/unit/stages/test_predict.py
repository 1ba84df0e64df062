"""``predict``: masks back in the input's own geometry (orientation, spacing, crop undone), the
report's volumes and severity class, bad inputs recorded while the rest is predicted."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from covidseg.config import PredictConfig, PreprocessConfig
from covidseg.data.lungs import classical_lung_mask
from covidseg.data.phantom import make_phantom
from covidseg.inference.report import severity_class
from covidseg.models.checkpoint import save_model
from covidseg.models.factory import ModelSpec, build_model
from covidseg.stages.predict import Predictor, predict_entry


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    spec = ModelSpec("unet", "resnet18")
    pre = PreprocessConfig(image_size=56).to_params()  # a crop around the lungs, to be undone
    return save_model(tmp_path_factory.mktemp("model"), build_model(spec), spec,
                      {"preprocess": pre, "task": "segmentation"})


def _write(arr, spacing, direction, origin, path):
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetDirection(direction)
    img.SetOrigin(origin)
    sitk.WriteImage(img, str(path))
    return img


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1),      # LPS
                                       (-1, 0, 0, 0, -1, 0, 0, 0, 1)])   # RAS, as many NIfTI
def test_masks_come_back_in_the_input_geometry(model_dir, tmp_path, direction):
    ph = make_phantom(7, size=96, depth_mm=24, kind="covid", centre="B")  # 65 mm: cropped to 56
    ref = _write(np.round(ph.image).astype(np.int16), ph.spacing, direction, (12.0, -7.5, 30.0),
                 tmp_path / "ct.nii.gz")
    report = Predictor.from_dir(model_dir).predict_file(tmp_path / "ct.nii.gz", tmp_path / "out")
    for name in ("infection", "lung"):
        out = sitk.ReadImage(str(tmp_path / "out" / f"ct_{name}.nii.gz"))
        assert out.GetSize() == ref.GetSize()
        assert np.allclose(out.GetSpacing(), ref.GetSpacing())
        assert np.allclose(out.GetOrigin(), ref.GetOrigin())
        assert np.allclose(out.GetDirection(), ref.GetDirection())
    lung = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "ct_lung.nii.gz")))
    # the lung mask written is the extraction on the input's own grid (not the 1 mm crop's copy)
    classical = classical_lung_mask(np.round(ph.image).astype(np.float32), ph.spacing, hu=True)
    assert np.array_equal(lung > 0, classical)
    infection = sitk.GetArrayFromImage(
        sitk.ReadImage(str(tmp_path / "out" / "ct_infection.nii.gz")))
    assert not (infection.astype(bool) & ~lung.astype(bool)).any()  # restricted to the lungs
    voxel_ml = float(np.prod(ph.spacing)) / 1000
    saved = json.loads((tmp_path / "out" / "ct_report.json").read_text())
    assert saved == report
    assert report["lesion_volume_ml"] == pytest.approx(infection.sum() * voxel_ml)
    assert report["lung_volume_ml"] == pytest.approx(lung.sum() * voxel_ml)
    pct = 100 * (infection & lung).sum() / lung.sum()
    assert report["involvement_percent"] == pytest.approx(pct)
    assert report["severity"] == severity_class(pct)


def test_severity_classes():
    assert [severity_class(p) for p in (0, 0.01, 24.9, 25, 50, 50.1, 75, 75.1, 100)] == \
        ["CT-0", "CT-1", "CT-1", "CT-2", "CT-2", "CT-3", "CT-3", "CT-4", "CT-4"]
    assert severity_class(None) is None


def test_predict_folder_records_bad_inputs_and_goes_on(model_dir, tmp_path):
    ph = make_phantom(8, size=64, depth_mm=16, kind="covid", centre="A")
    inp = tmp_path / "in"
    inp.mkdir()
    _write(np.round(ph.image).astype(np.int16), ph.spacing, (1, 0, 0, 0, 1, 0, 0, 0, 1),
           (0, 0, 0), inp / "good.nii.gz")
    good = (inp / "good.nii.gz").read_bytes()
    (inp / "cut.nii.gz").write_bytes(good[: len(good) // 2])
    # 200 mm pixels: refused before the 1 mm grid (12,800² a slice) is allocated
    _write(np.round(ph.image).astype(np.int16), (200.0, 200.0, ph.spacing[2]),
           (1, 0, 0, 0, 1, 0, 0, 0, 1), (0, 0, 0), inp / "huge.nii.gz")
    summary = predict_entry(PredictConfig(model=str(model_dir), input=str(inp),
                                          output=str(tmp_path / "out")))
    assert summary.predicted == 1 and summary.failed == 2
    assert (tmp_path / "out" / "good_infection.nii.gz").exists()
    assert "good" in (tmp_path / "out" / "predictions.csv").read_text()
    failed = (tmp_path / "out" / "failed.csv").read_text()
    assert "huge.nii.gz: field of view 12800 x 12800 mm" in failed and "cut.nii.gz" in failed


def test_predict_writes_a_slice_viewer_for_the_first_inputs(model_dir, tmp_path):
    import json
    import re

    inp = tmp_path / "in"
    inp.mkdir()
    for name, seed in (("a", 8), ("b", 9)):
        ph = make_phantom(seed, size=64, depth_mm=16, kind="covid", centre="A")
        _write(np.round(ph.image).astype(np.int16), ph.spacing, (1, 0, 0, 0, 1, 0, 0, 0, 1),
               (0, 0, 0), inp / f"{name}.nii.gz")
    out = tmp_path / "out"
    predict_entry(PredictConfig(model=str(model_dir), input=str(inp), output=str(out),
                                viewers=1))
    assert sorted(p.name for p in out.glob("*.html")) == ["a_viewer.html"]  # capped, in order
    page = (out / "a_viewer.html").read_text(encoding="utf-8")
    data = json.loads(re.search(r'type="application/json">(.*?)</script>', page, re.S).group(1))
    # the prediction alone: no truth, no Dice; nothing loaded from anywhere
    assert data["truth"] is False and data["case_dice"] is None and data["title"] == "a"
    assert all("dice" not in s and s["pred"] for s in data["slices"])
    assert not re.search(r"https?://", page)


def test_a_model_trained_on_provided_lungs_predicts_with_given_lungs(phantom_files, tmp_path,
                                                                    caplog):
    """lung_method=provided: without lungs= a one-line error before any work; with a folder of
    lung masks (paired by name) every input is predicted and restricted to those lungs."""
    from covidseg.base.errors import ConfigError

    _, cases = phantom_files
    spec = ModelSpec("unet", "resnet18")
    pre = PreprocessConfig(lung_method="provided").to_params()
    model = save_model(tmp_path / "model", build_model(spec), spec,
                       {"preprocess": pre, "lung_methods": ["provided"]})
    images = tmp_path / "in"
    images.mkdir()
    for c in cases[:2]:
        (images / c["image"].name).symlink_to(c["image"])
    cfg = PredictConfig(model=str(model), input=str(images), output=str(tmp_path / "out"))
    with pytest.raises(ConfigError, match="trained with lung_method=provided: give lungs="):
        predict_entry(cfg)
    cfg.lungs = str(cases[0]["lung"].parent)
    result = predict_entry(cfg)
    assert result.predicted == 2 and result.failed == 0
    for c in cases[:2]:
        report = json.loads((tmp_path / "out" / f"{c['image'].name[:-7]}_report.json").read_text())
        assert report["lung_method"] == "provided" and report["restrict_to_lungs"]
        written = sitk.GetArrayFromImage(
            sitk.ReadImage(str(tmp_path / "out" / report["lung_mask"])))
        given = sitk.GetArrayFromImage(sitk.ReadImage(str(c["lung"]))) > 0
        assert np.array_equal(written > 0, given)  # the given mask itself, on its own grid


def _nifti_arrays(folder):
    return {p.name: sitk.GetArrayFromImage(sitk.ReadImage(str(p)))
            for p in sorted(folder.glob("*.nii.gz"))}


def test_pipelined_predict_writes_what_the_sequential_order_writes(model_dir, tmp_path):
    """prefetch ≥ 1 (preparing ahead in threads, the network, writing in a thread) gives the same
    masks, probability maps, reports and failures, in input order, as prefetch=0."""
    inp = tmp_path / "in"
    inp.mkdir()
    for i, (centre, direction) in enumerate([("A", (1, 0, 0, 0, 1, 0, 0, 0, 1)),
                                             ("B", (-1, 0, 0, 0, -1, 0, 0, 0, 1)),
                                             ("D", (1, 0, 0, 0, 1, 0, 0, 0, 1)),
                                             ("A", (-1, 0, 0, 0, 1, 0, 0, 0, -1))]):
        ph = make_phantom(20 + i, size=64 + 16 * i, depth_mm=16, kind="covid", centre=centre)
        _write(np.round(ph.image).astype(np.int16), ph.spacing, direction, (3.0 * i, -5.0, 11.0),
               inp / f"v{i}.nii.gz")
    (inp / "v1b.nii.gz").write_bytes((inp / "v1.nii.gz").read_bytes()[:900])  # cut: fails
    outs = {}
    for prefetch in (0, 1, 3):
        out = tmp_path / f"out{prefetch}"
        summary = predict_entry(PredictConfig(model=str(model_dir), input=str(inp), output=str(out),
                                              prefetch=prefetch, probabilities=True,
                                              threshold="0.45"))
        assert summary.predicted == 4 and summary.failed == 1
        outs[prefetch] = out
    ref = _nifti_arrays(outs[0])
    assert len(ref) == 4 * 3 and any(a.any() for n, a in ref.items() if "_infection" in n)
    for prefetch in (1, 3):
        got = _nifti_arrays(outs[prefetch])
        assert got.keys() == ref.keys()
        for name in ref:
            assert np.array_equal(got[name], ref[name]), (prefetch, name)
        assert (outs[prefetch] / "predictions.csv").read_text() == \
            (outs[0] / "predictions.csv").read_text()
        for i in range(4):
            assert (outs[prefetch] / f"v{i}_report.json").read_text() == \
                (outs[0] / f"v{i}_report.json").read_text()
    rows = (outs[0] / "predictions.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["v0", "v1", "v2", "v3"]  # input order


def test_the_written_lung_mask_is_the_extraction_on_the_input_grid(model_dir, tmp_path):
    """The lung mask written (and the lesion restricted to) is the classical extraction on the
    input's own grid, voxel for voxel, in the file's orientation — not a copy of the 1 mm one
    resampled twice."""
    ph = make_phantom(9, size=80, depth_mm=20, kind="covid", centre="A")
    _write(np.round(ph.image).astype(np.int16), ph.spacing, (-1, 0, 0, 0, -1, 0, 0, 0, 1),
           (0, 0, 0), tmp_path / "ct.nii.gz")
    Predictor.from_dir(model_dir).predict_file(tmp_path / "ct.nii.gz", tmp_path / "out")
    lung = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "ct_lung.nii.gz")))
    # the extraction runs on the LPS reoriented volume (x and y flipped from this RAS file) and is
    # flipped back: the same voxels as the extraction on the file's own array
    expected = classical_lung_mask(np.round(ph.image).astype(np.float32), ph.spacing, hu=True)
    assert np.array_equal(lung.astype(bool), expected)
    assert not np.array_equal(lung.astype(bool), expected[:, ::-1, ::-1])  # left ≠ right here


def test_8bit_inputs_get_the_intensity_scheme_the_model_was_trained_with(tmp_path, caplog):
    """A model from before intensity=display (no intensity_modes in model.json) saw 8-bit slices
    z-scored per image with intensity=auto: its 8-bit inputs still are; a model that records its
    schemes gets auto's choice (display), and a warning when an input's scheme is not one it
    was trained on."""
    from tests.helpers import write_png_slice

    torch.manual_seed(0)
    spec = ModelSpec("unet", "resnet18")
    pre = PreprocessConfig(image_size=64).to_params()
    old = save_model(tmp_path / "old", build_model(spec), spec,
                     {"preprocess": pre, "task": "segmentation"})
    new = save_model(tmp_path / "new", build_model(spec), spec,
                     {"preprocess": pre, "task": "segmentation", "intensity_modes": ["display"]})
    hu_only = save_model(tmp_path / "hu", build_model(spec), spec,
                         {"preprocess": pre, "task": "segmentation", "intensity_modes": ["hu"]})
    yy, xx = np.mgrid[:80, :72]
    body = ((yy - 40) / 36) ** 2 + ((xx - 36) / 32) ** 2 < 1
    lungs = ((yy - 40) / 20) ** 2 + ((np.abs(xx - 36) - 14) / 9) ** 2 < 1
    png = write_png_slice(np.where(lungs, 40, np.where(body, 180, 0)), tmp_path / "slice.png")
    prep_old = Predictor.from_dir(old).prepare(png)[3]
    prep_new = Predictor.from_dir(new).prepare(png)[3]
    assert prep_old.meta["intensity"] == "image" and prep_new.meta["intensity"] == "display"
    assert prep_old.meta["norm_mean"] > 150  # z-scored by its own foreground (the body)
    assert (prep_new.meta["norm_mean"], prep_new.meta["norm_std"]) == (127.5, 63.75)
    with caplog.at_level("WARNING", logger="covidseg"):
        Predictor.from_dir(hu_only).predict_file(png, tmp_path / "out")
    assert "intensities here are display, the model was trained on hu images" in caplog.text


def _phantom_series(tmp_path, seed, **kwargs):
    """A phantom written as a DICOM series (RAS-like direction: the predictor flips back) with
    recognisable identifying tags; (folder, image)."""
    from tests.helpers import write_dicom_series

    ph = make_phantom(seed, size=64, depth_mm=12, kind="covid", centre="A")
    img = sitk.GetImageFromArray(np.round(ph.image).astype(np.int16))
    img.SetSpacing(ph.spacing)
    img.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    img.SetOrigin((40.0, 25.0, -70.0))
    return write_dicom_series(img, tmp_path / "series" / "patient_scan", **kwargs), img


def _no_identifying_value(data: bytes) -> None:
    from tests.helpers import IDENTIFYING

    for tag, value in IDENTIFYING.items():
        assert value.encode() not in data, (tag, value)


@pytest.mark.parametrize("classes", [1, 3])
def test_a_dicom_series_gets_a_dicom_seg_voxel_for_voxel_its_nifti_mask(model_dir, tmp_path,
                                                                        classes, caplog):
    """A DICOM series input: next to the NIfTI mask a BINARY DICOM SEG (one segment per lesion
    class) on the source slices and Frame of Reference, read back with highdicom equal to the
    NIfTI mask voxel for voxel (placed at the same points in space), holding no identifying value
    of the source."""
    import highdicom as hd
    import pydicom

    folder, _ = _phantom_series(tmp_path, 31)
    if classes > 1:
        torch.manual_seed(0)
        spec = ModelSpec("unet", "resnet18", classes=3)
        model_dir = save_model(tmp_path / "model3", build_model(spec), spec,
                               {"preprocess": PreprocessConfig(image_size=56).to_params(),
                                "task": "segmentation"})
    with caplog.at_level("DEBUG", logger="covidseg"):
        report = Predictor.from_dir(model_dir).predict_file(folder, tmp_path / "out",
                                                            threshold=0.3)
    assert report["dicom_seg"] == "patient_scan_infection.seg.dcm"
    nifti = sitk.ReadImage(str(tmp_path / "out" / report["infection_mask"]))
    mask = sitk.GetArrayFromImage(nifti)
    assert mask.any() and not mask.all()
    if classes > 1:
        assert set(np.unique(mask)) == {0, 1, 2}  # both classes present
    raw = (tmp_path / "out" / report["dicom_seg"]).read_bytes()
    seg = hd.seg.segread(tmp_path / "out" / report["dicom_seg"])
    assert seg.SegmentationType == "BINARY" and seg.Modality == "SEG"
    assert [s.SegmentLabel for s in seg.SegmentSequence] == (
        ["infection"] if classes == 1 else ["ground-glass opacity", "consolidation"])
    # the source slices in the order the NIfTI's slices are (the series reader's)
    from covidseg.data.readers import dicom_series_files

    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in dicom_series_files(folder)]
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    assert seg.SeriesInstanceUID != sources[0].SeriesInstanceUID
    by_source = seg.get_pixels_by_source_instance(
        [s.SOPInstanceUID for s in sources], combine_segments=True,
        assert_missing_frames_are_empty=True)
    assert np.array_equal(by_source, mask)
    # and in space: every SEG voxel's patient coordinates land on the same NIfTI voxel
    volume = seg.get_volume(combine_segments=True)
    idx = np.indices(volume.spatial_shape).reshape(3, -1)
    points = (volume.affine @ np.vstack([idx, np.ones(idx.shape[1])]))[:3]
    to_index = np.linalg.inv(np.array(nifti.GetDirection()).reshape(3, 3)
                             @ np.diag(nifti.GetSpacing()))
    ijk = np.round(to_index @ (points - np.array(nifti.GetOrigin())[:, None])).astype(int)
    assert np.array_equal(volume.array.reshape(-1), mask[ijk[2], ijk[1], ijk[0]])
    # privacy: no identifying value of the source anywhere in the SEG or the log; the Type 2
    # patient / study attributes present and empty
    _no_identifying_value(raw)
    _no_identifying_value(caplog.text.encode())
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "StudyID",
                    "StudyDate", "ReferringPhysicianName"):
        assert str(seg.get(keyword, "")) == ""
    for keyword in ("InstitutionName", "StationName", "SeriesDescription"):
        assert seg.get(keyword) != sources[0].get(keyword)


@pytest.mark.parametrize("bad", ["no_frame_of_reference", "write_fails"])
def test_a_dicom_seg_that_cannot_be_made_is_one_line_and_the_nifti_mask_stays(model_dir,
                                                                           tmp_path, bad,
                                                                           caplog):
    folder, _ = _phantom_series(tmp_path, 32,
                                frame_of_reference=bad != "no_frame_of_reference")
    out = tmp_path / "out"
    if bad == "write_fails":
        (out / "patient_scan_infection.seg.dcm").mkdir(parents=True)  # a folder in the way
    with caplog.at_level("WARNING", logger="covidseg"):
        report = Predictor.from_dir(model_dir).predict_file(folder, out, threshold=0.3)
    assert report["dicom_seg"] is None
    assert sitk.ReadImage(str(out / "patient_scan_infection.nii.gz")).GetSize()[2] == 6
    assert (out / "patient_scan_report.json").exists()
    assert (out / "patient_scan_lung.nii.gz").exists()
    assert not list(out.glob("*.part"))
    lines = [r.getMessage() for r in caplog.records if "DICOM SEG" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and "patient_scan: no DICOM SEG" in lines[0]
    assert ("has no FrameOfReferenceUID" if bad == "no_frame_of_reference"
            else "IsADirectoryError") in lines[0]
    _no_identifying_value(caplog.text.encode())


def test_a_series_with_a_missing_slice_gets_seg_frames_on_its_source_slices(model_dir, tmp_path):
    """Slices not equally spaced (one missing): the NIfTI gets the series reader's mean spacing,
    the SEG each frame at its own source slice's position (so a viewer shows it in place)."""
    import highdicom as hd
    import pydicom

    from covidseg.data.readers import dicom_series_files

    folder, _ = _phantom_series(tmp_path, 33)
    (folder / "slice_0002.dcm").unlink()
    report = Predictor.from_dir(model_dir).predict_file(folder, tmp_path / "out", threshold=0.3)
    seg = hd.seg.segread(tmp_path / "out" / report["dicom_seg"])
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / report["infection_mask"])))
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in dicom_series_files(folder)]
    uids = [s.SOPInstanceUID for s in sources]
    assert np.array_equal(seg.get_pixels_by_source_instance(
        uids, combine_segments=True, assert_missing_frames_are_empty=True), mask)
    where = {s.SOPInstanceUID: [float(v) for v in s.ImagePositionPatient] for s in sources}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient] == where[uid]
