"""The demo 2D slice export (what a public 2D set looks like) and the slice_baseline benchmark at
toy size: it runs, scores both arms on the original slice sizes and prints the ratio line."""

from __future__ import annotations

import numpy as np


def _read(path):
    import cv2

    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def test_export_writes_png_slices_of_varying_sizes_with_binary_masks(tmp_path):
    from covidseg.data.phantom import export_demo_slices

    kw = dict(n_labelled=6, n_test=3, n_unlabelled=2, size=(60, 100), phantom_size=96,
              depth_mm=24, slices_per_volume=2, jpg_fraction=0.3, seed=1)
    summary = export_demo_slices(tmp_path / "a", **kw)
    assert summary["counts"] == {"train": 6, "test": 3, "unlabelled": 2}
    shapes = set()
    for split in ("train", "test"):
        images = sorted((tmp_path / "a" / split / "images").iterdir())
        masks = {p.stem: p for p in (tmp_path / "a" / split / "masks").glob("*.png")}
        assert len(images) == len(masks) == summary["counts"][split]
        for img_path in images:
            img, mask = _read(img_path), _read(masks[img_path.stem])  # same stem
            assert img_path.suffix in (".png", ".jpg")
            assert img.dtype == np.uint8 and img.ndim == 2 and img.max() > img.min()
            assert mask.dtype == np.uint8 and mask.shape == img.shape
            assert set(np.unique(mask)) == {0, 255}  # every labelled slice shows lesion
            assert 60 <= max(img.shape) <= 100
            shapes.add(img.shape)
    assert len(shapes) > 3 and any(h != w for h, w in shapes)
    assert not (tmp_path / "a" / "unlabelled" / "masks").exists()
    train_stems = {p.stem for p in (tmp_path / "a" / "train" / "images").iterdir()}
    test_stems = {p.stem for p in (tmp_path / "a" / "test" / "images").iterdir()}
    assert not train_stems & test_stems
    # deterministic by seed; an existing export with the same settings is reused
    again = export_demo_slices(tmp_path / "b", **kw)
    a_png = sorted((tmp_path / "a" / "train" / "masks").glob("*.png"))
    b_png = sorted((tmp_path / "b" / "train" / "masks").glob("*.png"))
    assert [p.read_bytes() for p in a_png] == [p.read_bytes() for p in b_png]
    assert again["files"] == summary["files"]
    stamp = a_png[0].stat().st_mtime_ns
    assert export_demo_slices(tmp_path / "a", **kw)["files"] == summary["files"]
    assert a_png[0].stat().st_mtime_ns == stamp






