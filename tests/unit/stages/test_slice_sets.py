"""2D slice sets as a new user meets them (issue 13): a folder of PNG/JPG slices of varying sizes
with 0/255 masks through preprocess → finetune → evaluate → predict with ``mlflow run`` against a
real server on the first try; metrics on each image's original grid equal the ones computed by
hand on the written files; one-slice volumes are slices; multi-class masks; true messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from covidseg.base.errors import ConfigError
from covidseg.config import FinetuneConfig, PreprocessConfig
from covidseg.data.layouts import CaseRecord
from covidseg.data.phantom import make_phantom
from covidseg.data.steps import preprocess_case
from covidseg.models.network import NetworkTraits
from covidseg.stages.preprocess import preprocess_dataset, preprocess_settings

SIZES = [(96, 80), (70, 96), (88, 88), (64, 100), (100, 72), (80, 64), (90, 90), (76, 84),
         (84, 70), (96, 96)]


def _window(image_hu: np.ndarray) -> np.ndarray:
    """HU → 8-bit display values, as public 2D sets ship their slices."""
    return np.clip((image_hu + 1250.0) / 1500.0 * 255.0, 0, 255)


def write_slice_set(root: Path, labels: str = "binary", n_train: int = 7, n_test: int = 3) -> Path:
    """Axial slices of phantoms with lesion, cut to varying sizes, as PNG (some JPG) images and
    0/255 PNG masks (``labels=multiclass``: 0/1/2 label maps)."""
    k = 0
    for split, n in (("train", n_train), ("test", n_test)):
        done = 0
        seed = 300 + 10 * k
        while done < n:
            seed += 1
            ph = make_phantom(seed, size=112, depth_mm=6, difficulty=0.2)
            z = int(np.argmax(ph.infection.sum(axis=(1, 2))))
            h, w = SIZES[k % len(SIZES)]
            y0, x0 = (112 - h) // 2, (112 - w) // 2
            inf = ph.infection[z, y0:y0 + h, x0:x0 + w] > 0
            if inf.sum() < 30:
                continue
            img = _window(ph.image[z, y0:y0 + h, x0:x0 + w])
            ext = "jpg" if k % 4 == 3 else "png"
            (root / split / "images").mkdir(parents=True, exist_ok=True)
            (root / split / "masks").mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(sitk.GetImageFromArray(img.astype(np.uint8)),
                            str(root / split / "images" / f"slice{k:02d}.{ext}"))
            if labels == "multiclass":  # consolidation = the denser half of the lesion
                hu = ph.image[z, y0:y0 + h, x0:x0 + w]
                mask = np.where(inf, np.where(hu > np.median(hu[inf]), 2, 1), 0)
            else:
                mask = inf * 255
            sitk.WriteImage(sitk.GetImageFromArray(mask.astype(np.uint8)),
                            str(root / split / "masks" / f"slice{k:02d}_mask.png"))
            k += 1
            done += 1
    return root


def _patterns(root: Path) -> dict:
    return {"images": str(root / "train/images/*"), "masks": str(root / "train/masks/*"),
            "test_images": str(root / "test/images/*"), "test_masks": str(root / "test/masks/*")}


def _read(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_one_slice_volumes_are_slices_never_cut(tmp_path):
    """A one-slice NIfTI (1 × H × W, real spacing) is fitted to image_size like a PNG: resized
    (or padded), never cropped around the lungs; the choice is recorded."""
    ph = make_phantom(5, size=96, depth_mm=6, difficulty=0.2)
    z = int(np.argmax(ph.infection.sum(axis=(1, 2))))
    img = sitk.GetImageFromArray(ph.image[z:z + 1].astype(np.int16))
    img.SetSpacing((0.7, 0.7, 5.0))
    msk = sitk.GetImageFromArray(ph.infection[z:z + 1].astype(np.uint8))
    msk.CopyInformation(img)
    sitk.WriteImage(img, str(tmp_path / "one.nii.gz"))
    sitk.WriteImage(msk, str(tmp_path / "one_mask.nii.gz"))
    rec = CaseRecord("one", str(tmp_path / "one.nii.gz"), str(tmp_path / "one_mask.nii.gz"))
    lesion = int(ph.infection[z].sum())
    for fit, size in (("resize", 48), ("pad", 128), ("pad", 48)):
        settings = preprocess_settings(PreprocessConfig(image_size=size, slice_fit=fit))
        out = preprocess_case(rec, settings, None)
        assert out.image.shape == (1, size, size)
        assert out.meta["slice_image"] and out.meta["slice_fit"] == fit
        scale = min(size / 96, 1.0) if fit == "pad" else size / 96
        # the whole lesion is there, scaled by the area factor: nothing was cut
        assert out.infection.sum() == pytest.approx(lesion * scale ** 2, rel=0.2)
        assert out.original.shape == (1, 96, 96) and out.original.sum() == lesion
    settings = preprocess_settings(PreprocessConfig(image_size=128, slice_fit="pad"))
    padded = preprocess_case(rec, settings, None)
    assert padded.infection.sum() == lesion  # padding keeps every pixel


def test_bad_data_pattern_combinations_say_what_is_wrong(tmp_path):
    root = write_slice_set(tmp_path / "s", n_train=2, n_test=0)
    cases = [
        (dict(images="train/images/*"), "relative pattern: give data=FOLDER"),
        (dict(dataset="glob"), "dataset=glob needs glob patterns"),
        (dict(masks=str(root / "train/masks/*")), "masks= given without images="),
        (dict(data=str(root), images="nothing/*.png"), "no images match 'nothing/*.png'"),
        (dict(data=str(root), dataset="mosmed", images="train/images/*"),
         "read by dataset=glob, not dataset=mosmed"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("*", r"\*")):
            preprocess_dataset(PreprocessConfig(**kwargs), progress=False)
    # absolute patterns need no folder (data stays at its default)
    ok = preprocess_dataset(PreprocessConfig(images=str(root / "train/images/*"),
                                             masks=str(root / "train/masks/*"), image_size=32,
                                             test_cases=1, folds=1), progress=False)
    assert ok["n_cases"] == 2 and ok["n_failed"] == 0


def test_a_figure_that_cannot_be_drawn_is_skipped(tmp_path, caplog):
    from covidseg.data import figures
    from covidseg.tracking import NullTracker

    def broken():
        raise ValueError("Input z must be at least a (2, 2) shaped array")

    assert figures.draw(tmp_path / "x.png", broken) is None and not (tmp_path / "x.png").exists()
    NullTracker().figure("figures/x.png", broken)  # logs a warning, never raises
    assert "figure x.png skipped" in caplog.text


def test_multiclass_masks_train_and_score_per_class(tmp_path):
    """0/1/2 masks with labels=multiclass: a 3-class network, per-class and union Dice; the
    same masks without it are refused with a hint."""
    from covidseg.stages.finetune import finetune
    from covidseg.stages.predict import Predictor

    root = write_slice_set(tmp_path / "mc", labels="multiclass", n_train=6, n_test=2)
    prep = preprocess_dataset(PreprocessConfig(**_patterns(root), image_size=64, test_cases=2,
                                               folds=2, labels="multiclass"), progress=False)
    assert prep["n_failed"] == 0
    with pytest.raises(ConfigError, match="labels=multiclass reads 0/1/2"):
        preprocess_dataset(PreprocessConfig(**_patterns(root), image_size=64, test_cases=2,
                                            folds=2), progress=False)
    summary = finetune(FinetuneConfig(data=prep["dataset_path"], epochs=2, patience=5,
                                      batch_size=4, encoder="resnet18", checkpoint_every=0,
                                      overlays=0, workers=0, iterations_per_epoch=6, warmup=0),
                       progress=False)
    from covidseg.data.store import PreprocessedDataset
    from covidseg.models.checkpoint import load_model
    from covidseg.train.evaluation import evaluate_cases

    model, config = load_model(summary.model_uri)
    assert config["model"]["classes"] == 3
    ds = PreprocessedDataset(Path(prep["dataset_path"]))
    import torch

    ev = evaluate_cases(model, ds, ds.splits.test, torch.device("cpu"))
    for row in ev.rows:
        for key in ("volume_dice", "volume_dice_ground_glass", "volume_dice_consolidation",
                    "volume_dice_ground_glass_resampled"):
            assert 0.0 <= row[key] <= 1.0, key
    # known answer: a network that calls every pixel consolidation (softmax of fixed logits)
    class Consolidation(torch.nn.Module):
        traits = NetworkTraits(classes=3)

        def forward(self, x):
            logits = torch.tensor([0.0, 1.0, 3.0]).view(1, 3, 1, 1)
            return logits.expand(x.shape[0], 3, *x.shape[2:]).clone()

    ev = evaluate_cases(Consolidation(), ds, ds.splits.test, torch.device("cpu"))
    for row in ev.rows:
        ref = _read(next((root / "test" / "masks").glob(f"{row['case_id']}_mask.*")))
        n, n1, n2 = ref.size, int((ref == 1).sum()), int((ref == 2).sum())
        assert n1 and n2
        assert row["volume_dice"] == pytest.approx(2 * (n1 + n2) / (n + n1 + n2))
        assert row["volume_dice_consolidation"] == pytest.approx(2 * n2 / (n + n2))
        assert row["volume_dice_ground_glass"] == 0.0
    image = next((root / "test" / "images").glob("*"))
    Predictor.from_dir(summary.model_uri).predict_file(image, tmp_path / "pred",
                                                          threshold=0.05)
    labels = _read(tmp_path / "pred" / f"{image.stem}_infection.png")
    assert set(np.unique(labels)) <= {0, 1, 2} and labels.max() > 0
