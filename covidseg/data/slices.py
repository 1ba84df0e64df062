"""2D axial slices of a preprocessed dataset as a PyTorch dataset (the thesis slices volumes).

Slices are read from memory-mapped arrays, padded (background 0) to one size per dataset that is a
multiple of the encoder's output stride (32), optionally cut to a random ``crop`` window,
augmented in the worker, and returned as
``(image[1, H, W], mask[1, H, W])`` float32 tensors.  :func:`slice_sampling_weights` lets lesion-
containing slices be drawn more often.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from covidseg.data.store import PreprocessedDataset


def padded_size(ds: PreprocessedDataset, case_ids, multiple: int = 32) -> tuple[int, int]:
    hs = [ds.cases[c]["shape"][1] for c in case_ids]
    ws = [ds.cases[c]["shape"][2] for c in case_ids]
    up = lambda n: int(np.ceil(max(n) / multiple) * multiple)  # noqa: E731
    return up(hs), up(ws)


def pad_to(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre a (H, W) slice in a zero canvas of ``size`` (cropping the centre if larger)."""
    h, w = array.shape
    H, W = size
    out = np.zeros((H, W), dtype=array.dtype)
    y0, x0 = (H - h) // 2, (W - w) // 2
    sy, sx = max(0, -y0), max(0, -x0)
    ty, tx = max(0, y0), max(0, x0)
    hh, ww = min(h - sy, H - ty), min(w - sx, W - tx)
    out[ty:ty + hh, tx:tx + ww] = array[sy:sy + hh, sx:sx + ww]
    return out


def random_crop(image: np.ndarray, mask: np.ndarray, size: int, rng: np.random.Generator):
    """A size × size window (sides padded first when smaller), half the time centred on lesion."""
    H, W = image.shape
    if H < size or W < size:
        grown = (max(H, size), max(W, size))
        image, mask = pad_to(image, grown), pad_to(mask, grown)
        H, W = image.shape
    ys, xs = np.nonzero(mask)
    if ys.size and rng.random() < 0.5:
        k = rng.integers(ys.size)
        y0 = int(np.clip(ys[k] - size // 2, 0, H - size))
        x0 = int(np.clip(xs[k] - size // 2, 0, W - size))
    else:
        y0, x0 = int(rng.integers(H - size + 1)), int(rng.integers(W - size + 1))
    return image[y0:y0 + size, x0:x0 + size], mask[y0:y0 + size, x0:x0 + size]


class SliceDataset(Dataset):
    def __init__(self, ds: PreprocessedDataset, case_ids, augment=None, size=None, seed: int = 0,
                 require_mask: bool = True, crop: int = 0, oracle: bool = False):
        """``oracle``: a case without a mask gives its oracle truth (demo phantoms) as the mask —
        for scoring pseudo-labels only, never as a training target."""
        self.ds, self.oracle = ds, oracle
        self.case_ids = list(case_ids)
        self.augment = augment
        self.size = tuple(size) if size else padded_size(ds, self.case_ids)
        self.seed = seed
        self.require_mask = require_mask
        self.crop = int(crop) if crop and crop < max(self.size) else 0
        self.index = [(c, z) for c in self.case_ids for z in range(ds.cases[c]["shape"][0])]
        self._epoch = 0
        self._arrays: dict[str, tuple] = {}  # memmaps opened once per case (per worker)

    def arrays(self, case_id: str):
        if case_id not in self._arrays:
            image, infection, lung = self.ds.load(case_id)
            if infection is None and self.oracle:
                infection = self.ds.load_truth(case_id)
            self._arrays[case_id] = (image, infection, lung)
        return self._arrays[case_id]

    def set_epoch(self, epoch: int) -> None:
        """Different augmentation each epoch, reproducible for a seed."""
        self._epoch = epoch

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key):
        """Slice ``i`` augmented for the current epoch, or for ``epoch`` when the key is the pair
        ``(epoch, i)`` (what :class:`covidseg.train.tasks.EpochSampler` yields, so that
        persistent loader workers need no ``set_epoch``)."""
        epoch, i = key if isinstance(key, tuple) else (self._epoch, key)
        case_id, z = self.index[i]
        image, infection, _ = self.arrays(case_id)
        img = pad_to(np.asarray(image[z], dtype=np.float32), self.size)
        if infection is None:
            if self.require_mask:
                raise KeyError(f"case {case_id} has no infection mask")
            msk = np.zeros(self.size, np.uint8)
        else:
            msk = pad_to(np.asarray(infection[z], dtype=np.uint8), self.size)
        rng = np.random.default_rng([self.seed, epoch, i])
        if self.crop:
            img, msk = random_crop(img, msk, self.crop, rng)
        if self.augment is not None:
            img, msk = self.augment(img, msk, rng)
        return torch.from_numpy(img[None].copy()), torch.from_numpy(msk[None].astype(np.float32))


def slice_sampling_weights(dataset: SliceDataset, lesion_boost: float = 1.0) -> torch.Tensor:
    """Sampling weight per slice: ``lesion_boost`` for slices with lesion, 1 otherwise."""
    weights = np.ones(len(dataset), dtype=np.float64)
    if lesion_boost != 1.0:
        start = 0  # the index lists each case's slices contiguously, in case order
        for c in dataset.case_ids:
            _, infection, _ = dataset.arrays(c)
            n = dataset.ds.cases[c]["shape"][0]
            if infection is not None:
                has = np.asarray(infection).any(axis=(1, 2))
                weights[start:start + n] = np.where(has, lesion_boost, 1.0)
            start += n
    return torch.from_numpy(weights)
