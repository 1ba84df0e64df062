from pathlib import Path

import numpy as np
import torch

from covidseg.config import PreprocessConfig
from covidseg.data.augment import SliceAugment
from covidseg.data.slices import SliceDataset, pad_to, slice_sampling_weights
from covidseg.data.splits import fold_split
from covidseg.data.store import PreprocessedDataset
from covidseg.stages.preprocess import preprocess_dataset


def _dataset(phantom_files):
    root, _ = phantom_files
    s = preprocess_dataset(PreprocessConfig(data=str(root), dataset="glob",
                                            images="images/*.nii.gz", masks="masks/*.nii.gz",
                                            test_cases=1, folds=3),
                           progress=False)
    return PreprocessedDataset(Path(s["dataset_path"]))


def test_slices_are_padded_to_a_multiple_of_32(phantom_files):
    ds = _dataset(phantom_files)
    train, val = fold_split(ds.splits, 0)
    sd = SliceDataset(ds, train)
    assert len(sd) == sum(ds.cases[c]["shape"][0] for c in train)
    img, msk = sd[0]
    assert img.shape == msk.shape and img.shape[1] % 32 == 0 and img.shape[2] % 32 == 0
    assert img.dtype == torch.float32 and set(torch.unique(msk).tolist()) <= {0.0, 1.0}
    # padding centres the stored slice, image and mask alike, and keeps every lesion pixel: the
    # slice with the most lesion, compared pixel for pixel with the arrays on disk
    lesion = [int(np.asarray(ds.load(c)[1][z]).sum()) for c, z in sd.index]
    i = int(np.argmax(lesion))
    c, z = sd.index[i]
    raw_img, raw_msk = (np.asarray(a[z]) for a in ds.load(c)[:2])
    img, msk = sd[i]
    H, W = sd.size
    h, w = raw_msk.shape
    assert h <= H and w <= W and lesion[i] > 0
    y0, x0 = (H - h) // 2, (W - w) // 2
    expected_img, expected_msk = np.zeros((H, W), np.float32), np.zeros((H, W), np.float32)
    expected_img[y0:y0 + h, x0:x0 + w] = raw_img
    expected_msk[y0:y0 + h, x0:x0 + w] = raw_msk
    np.testing.assert_array_equal(msk[0].numpy(), expected_msk)
    np.testing.assert_array_equal(img[0].numpy(), expected_img)
    assert int(msk.sum()) == lesion[i]


def test_augmented_slices_and_lesion_weights(phantom_files):
    ds = _dataset(phantom_files)
    sd = SliceDataset(ds, ds.ids(labelled=True), augment=SliceAugment(p=1.0), seed=1)
    a = sd[3][0]
    sd.set_epoch(1)
    b = sd[3][0]
    assert not torch.equal(a, b)
    w = slice_sampling_weights(sd, lesion_boost=4.0)
    has = torch.tensor([bool(np.asarray(ds.load(c)[1][z]).any()) for c, z in sd.index])
    assert (w[has] == 4.0).all() and (w[~has] == 1.0).all()


def test_pad_to_centres_and_crops():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    p = pad_to(a, (5, 6))
    assert p.shape == (5, 6) and p.sum() == a.sum() and p[1, 1] == a[0, 0]
    assert pad_to(np.ones((70, 70)), (64, 64)).shape == (64, 64)
