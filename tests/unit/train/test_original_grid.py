"""Evaluation on each case's original grid (issue 13): the metrics ``evaluate`` reports for a
volume equal the ones computed by hand from ``predict``'s written NIfTI and the dataset's own mask
file, for anisotropic volumes stored in another orientation (RAS) and cropped in preprocessing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from covidseg.config import PreprocessConfig
from covidseg.data.store import PreprocessedDataset
from covidseg.models.checkpoint import save_model
from covidseg.models.factory import ModelSpec, build_model
from covidseg.stages.predict import Predictor
from covidseg.stages.preprocess import preprocess_dataset
from covidseg.train.evaluation import evaluate_cases
from covidseg.train.metrics import overlap_metrics, surface_dice_area, surface_metrics


def _ras_copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.DICOMOrient(sitk.ReadImage(str(src)), "RAS"), str(dst))
    return dst


def _ras_dataset(phantom_files, tmp_path):
    """The phantom volumes and masks stored in RAS orientation, preprocessed with a crop."""
    _, cases = phantom_files
    root = tmp_path / "ras"
    for c in cases:
        for kind in ("image", "infection"):
            _ras_copy(c[kind], root / ("images" if kind == "image" else "masks") / c[kind].name)
    prep = preprocess_dataset(PreprocessConfig(data=str(root), images="images/*.nii.gz",
                                               masks="masks/*.nii.gz", image_size=48,
                                               test_cases=2, folds=2), progress=False)
    return root, PreprocessedDataset(Path(prep["dataset_path"]))


def test_volume_metrics_on_the_original_grid_equal_metrics_by_hand(phantom_files, tmp_path):
    root, ds = _ras_dataset(phantom_files, tmp_path)
    assert all(m["crop_corner_yx"] for m in ds.cases.values())  # cropped: un-cropping is tested

    torch.manual_seed(3)
    spec = ModelSpec(arch="unet", encoder="resnet18")
    model = build_model(spec).eval()  # an untrained network: irregular, non-empty predictions
    model_dir = save_model(tmp_path / "model", model, spec,
                           {"preprocess": ds.descriptor["config"], "threshold": 0.5})
    ev = evaluate_cases(model, ds, ds.splits.test, torch.device("cpu"), threshold=0.5)
    assert len(ev.rows) == 2

    predictor = Predictor.from_dir(model_dir, device="cpu")
    for row in ev.rows:
        image_file = root / "images" / f"{row['case_id']}.nii.gz"
        predictor.predict_file(image_file, tmp_path / "pred", threshold=0.5,
                               restrict_to_lungs=False)
        written = sitk.ReadImage(str(tmp_path / "pred" / f"{row['case_id']}_infection.nii.gz"))
        reference = sitk.ReadImage(str(root / "masks" / f"{row['case_id']}.nii.gz"))
        assert written.GetDirection() == reference.GetDirection()  # the file's own orientation
        pred = sitk.GetArrayFromImage(written) > 0
        ref = sitk.GetArrayFromImage(reference) > 0
        spacing = tuple(reversed(reference.GetSpacing()))  # (z, y, x) in mm, anisotropic
        assert pred.any() and ref.any() and len(set(spacing)) > 1
        assert row["grid"] == "original"
        assert row["volume_dice"] == pytest.approx(overlap_metrics(pred, ref)["dice"], abs=1e-12)
        by_hand = surface_metrics(pred, ref, spacing)
        assert row["volume_hd95"] == pytest.approx(by_hand["hd95"], abs=1e-6)
        assert row["volume_nsd"] == pytest.approx(by_hand["nsd"], abs=1e-9)
        assert row["volume_nsd_area"] == pytest.approx(surface_dice_area(pred, ref, spacing),
                                                       abs=1e-6)
        ml = ref.sum() * np.prod(spacing) / 1000.0
        assert row["lesion_ml_reference"] == pytest.approx(ml, rel=1e-9)
        # the preprocessed-grid score is kept beside it, and it is another number
        assert "volume_dice_resampled" in row and row["volume_dice_resampled"] != row["volume_dice"]


def test_the_preprocessed_reference_maps_back_onto_the_original_mask(phantom_files, tmp_path):
    """Independent of predict: the stored (resampled, cropped) reference mask, mapped back with
    the same function evaluation uses, lands on the original mask file's voxels."""
    from covidseg.data.geometry import resample_in_plane, to_canonical_grid

    root, ds = _ras_dataset(phantom_files, tmp_path)
    for case_id, meta in ds.cases.items():
        original = ds.load_original(case_id) > 0
        ref_file = sitk.DICOMOrient(sitk.ReadImage(str(root / "masks" / f"{case_id}.nii.gz")),
                                    "LPS")
        assert np.array_equal(original, sitk.GetArrayFromImage(ref_file) > 0)
        back = to_canonical_grid(np.asarray(ds.load(case_id)[1], np.float32), meta) > 0.5
        assert back.shape == original.shape
        # expected: the same round trip with SimpleITK alone and no crop (the crop cut no lesion)
        down = resample_in_plane(sitk.Cast(ref_file, sitk.sitkUInt8), 1.0, label=True)
        up = sitk.Resample(sitk.Cast(down, sitk.sitkFloat32), ref_file, sitk.Transform(),
                           sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        expected = sitk.GetArrayFromImage(up) > 0.5
        assert meta["lesion_volume_ml"] > 0 and expected.any()
        assert np.array_equal(back, expected), overlap_metrics(back, expected)["dice"]


def test_datasets_without_original_masks_are_scored_on_the_preprocessed_grid_and_say_so(
        tmp_path, caplog):
    """A dataset preprocessed before the original grid was kept still evaluates: rows say
    ``grid=preprocessed``, a warning says why, and the slice metrics carry ``_resampled``."""
    import json

    from covidseg.tracking import NullTracker
    from covidseg.train.evaluation import log_evaluation
    from tests.unit.stages.test_slice_sets import write_slice_set

    root = write_slice_set(tmp_path / "s", n_train=3, n_test=2)
    prep = preprocess_dataset(PreprocessConfig(
        images=str(root / "train/images/*"), masks=str(root / "train/masks/*"),
        test_images=str(root / "test/images/*"), test_masks=str(root / "test/masks/*"),
        image_size=32, test_cases=2, folds=1), progress=False)
    ds_root = Path(prep["dataset_path"])
    desc = json.loads((ds_root / "dataset.json").read_text())
    for case in desc["cases"]:  # as an older covidseg wrote it
        case.pop("canonical_geometry")
        (ds_root / "cases" / case["case_id"] / "original.npz").unlink(missing_ok=True)
    (ds_root / "dataset.json").write_text(json.dumps(desc))
    ds = PreprocessedDataset(ds_root)
    torch.manual_seed(0)
    model = build_model(ModelSpec(arch="unet", encoder="resnet18")).eval()
    ev = evaluate_cases(model, ds, ds.splits.test, torch.device("cpu"))
    assert ev.grid == "preprocessed" and all(r["grid"] == "preprocessed" for r in ev.rows)
    assert "scored on the preprocessed grid" in caplog.text
    metrics = log_evaluation(NullTracker(), ev, "test")
    assert "test_slice_dice_thravg_resampled" in metrics and "test_slice_dice_thravg" not in metrics
    # the split's numbers are the Inf-Net convention over its slices (curve averaged, then mean/max)
    from covidseg.inference import predict_volume
    from covidseg.train.metrics import threshold_free_dice

    pairs = [(predict_volume(model, np.asarray(ds.load(c)[0]), torch.device("cpu"))[0],
              np.asarray(ds.load(c)[1])[0] > 0) for c in ds.splits.test]
    expected = threshold_free_dice([p for p, _ in pairs], [r for _, r in pairs])
    assert metrics["test_slice_dice_thravg_resampled"] == pytest.approx(expected["dice_thravg"])
    assert metrics["test_slice_dice_max_resampled"] == pytest.approx(expected["dice_max"])


def test_padded_slices_map_back_pixel_for_pixel(tmp_path):
    """``slice_fit=pad``: the stored reference maps back onto the original image exactly."""
    from covidseg.data.geometry import to_canonical_grid
    from tests.unit.stages.test_slice_sets import write_slice_set

    root = write_slice_set(tmp_path / "s", n_train=3, n_test=0)
    prep = preprocess_dataset(PreprocessConfig(
        images=str(root / "train/images/*"), masks=str(root / "train/masks/*"), image_size=112,
        slice_fit="pad", test_cases=0, folds=1), progress=False)
    ds = PreprocessedDataset(Path(prep["dataset_path"]))
    for case_id, meta in ds.cases.items():
        back = to_canonical_grid(np.asarray(ds.load(case_id)[1], np.float32), meta) > 0.5
        assert np.array_equal(back, ds.load_original(case_id) > 0)
        assert meta["shape"][1:] == [112, 112] and meta["slice_fit"] == "pad"
