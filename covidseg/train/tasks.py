"""Training tasks for :func:`covidseg.train.loop.fit`: what a batch, a loss and a validation are.

* :class:`SegmentationTask` — supervised binary segmentation on 2D axial slices (finetune,
  supervised pretraining; mean-teacher builds on it), validated by the mean volume-level 3D Dice
  over the validation volumes;
* :class:`RestorationTask` — Models Genesis-style self-supervised restoration (MSE), validated
  by the restoration MSE on held-out slices with fixed distortions.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from covidseg.data.augment import mixup
from covidseg.data.restoration import GenesisDistort
from covidseg.data.slices import SliceDataset, slice_sampling_weights
from covidseg.data.store import PreprocessedDataset
from covidseg.inference import predict_volume, to_coarse
from covidseg.models.network import traits_of
from covidseg.train.calibration import Calibration
from covidseg.train.distributed import shard, world
from covidseg.train.losses import SegmentationLoss
from covidseg.train.metric_keys import VAL_VOLUME_DICE, MetricKey, Split, keyed
from covidseg.train.metrics import overlap_metrics


def default_workers(requested: int = -1) -> int:
    """DataLoader workers: as requested, or half the CPUs (at most 8) for -1 — shared between the
    training processes of one machine under torchrun."""
    if requested >= 0:
        return requested
    return max(0, min(8, (os.cpu_count() or 1) // 2 // world().local_size))


class EpochSampler(Sampler):
    """One epoch's slice order as ``(epoch, index)`` pairs: shuffled, or drawn with replacement by
    ``weights`` (lesion-weighted), reproducibly for (seed, epoch).  The epoch travels with each
    index, so one loader with persistent workers serves every epoch: no worker start-up per epoch
    (tiny label budgets make tiny epochs), and augmentation still differs per epoch and is the
    same whatever the number of workers.

    ``iterations`` > 0: an epoch is that many batches, whatever the set's size — successive
    shuffles of the whole set (every slice once before any twice), or ``iterations × batch``
    weighted draws; 0: one pass over the set.

    Under torchrun every rank draws the same order and keeps its ``batch_size`` share of each
    global batch (:func:`covidseg.train.distributed.shard`)."""

    def __init__(self, n: int, seed: int, weights: torch.Tensor | None = None,
                 batch_size: int = 1, iterations: int = 0):
        self.n, self.seed, self.weights, self.epoch = n, int(seed), weights, 0
        self.batch_size, self.iterations = batch_size, int(iterations)

    def _count(self) -> int:
        """Items drawn per epoch over all ranks."""
        if self.iterations > 0:
            return self.iterations * self.batch_size * world().size
        return self.n

    def __len__(self) -> int:
        return len(shard(list(range(self._count())), self.batch_size))

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + int(self.epoch))
        count = self._count()
        if self.weights is not None:
            order = torch.multinomial(self.weights, count, replacement=True, generator=g).tolist()
        else:
            order = shuffled_passes(self.n, count, g)
        return iter([(self.epoch, i) for i in shard(order, self.batch_size)])


def shuffled_passes(n: int, count: int, generator: torch.Generator) -> list[int]:
    """``count`` indices of ``0 … n-1``: successive shuffles of all of them (each index once
    before any twice), the last one cut."""
    passes = -(-count // max(1, n))
    return torch.cat([torch.randperm(n, generator=generator) for _ in range(passes)])[
        :count].tolist() if n else []


class EpochLoader:
    """The training loader of a task, built once: ``loader(epoch)`` is the DataLoader set to that
    epoch's :class:`EpochSampler` order (pinned memory on CUDA, workers kept between epochs)."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, workers: int,
                 device: torch.device, weights: torch.Tensor | None = None,
                 iterations: int = 0):
        self.sampler = EpochSampler(len(dataset), seed, weights, batch_size, iterations)
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=self.sampler,
                                 num_workers=workers, persistent_workers=workers > 0,
                                 pin_memory=device.type == "cuda",
                                 drop_last=len(self.sampler) > batch_size)

    def __call__(self, epoch: int) -> DataLoader:
        self.sampler.epoch = epoch
        return self.loader

    def __len__(self) -> int:
        """Batches per epoch."""
        return len(self.loader)


class _Base:
    monitor = str(VAL_VOLUME_DICE)
    monitor_mode = "max"

    @property
    def train_model(self):
        """The module training forwards go through: the DistributedDataParallel wrapper of
        ``model`` under torchrun (:meth:`train_through`), else ``model``.  Validation, EMA and
        the kept weights use ``model`` itself."""
        return self.__dict__.get("_train_model") or self.model

    def train_through(self, module) -> None:
        self._train_model = module

    def after_step(self, step: int) -> None:
        pass

    def best_network(self, metrics: dict):
        return self.model

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        pass


class _Segmentation(_Base):
    """What 2D-slice and whole-volume segmentation share: the loss of a batch (mixup optional),
    validation by the mean 3D Dice over the validation volumes at ``threshold``."""

    use_mixup = False

    def __init__(self, model, ds: PreprocessedDataset, val_ids, loss: SegmentationLoss,
                 device: torch.device, seed: int = 0, eval_batch: int = 16,
                 threshold: float = 0.5):
        self.model, self.ds, self.loss, self.device = model, ds, loss, device
        self.val_ids, self.seed = list(val_ids), seed
        self.eval_batch, self.threshold = eval_batch, threshold

    def to_device(self, batch):
        return tuple(t.to(self.device, non_blocking=True) for t in batch)

    def training_step(self, batch, step: int):
        images, masks = self.to_device(batch)
        if self.use_mixup:
            images, masks = mixup(images, masks, np.random.default_rng([self.seed, step]))
        return self.loss(self.train_model(images), masks), {}

    def validate(self, epoch: int) -> dict:
        return validation_scores(self.model, self.ds, self.val_ids, self.device, self.eval_batch,
                                 self.threshold)


class SegmentationTask(_Segmentation):
    """Supervised segmentation of 2D slices; validation = mean 3D Dice over volumes."""

    def __init__(self, model, ds: PreprocessedDataset, train_ids, val_ids, loss: SegmentationLoss,
                 device: torch.device, batch_size: int = 8, seed: int = 0, workers: int = 0,
                 augment=None, crop: int = 0, lesion_boost: float = 1.0, use_mixup: bool = False,
                 eval_batch: int = 16, threshold: float = 0.5, iterations: int = 0):
        super().__init__(model, ds, val_ids, loss, device, seed, eval_batch, threshold)
        self.train_set = SliceDataset(ds, train_ids, augment=augment, seed=seed, crop=crop)
        self.weights = (slice_sampling_weights(self.train_set, lesion_boost)
                        if lesion_boost != 1 else None)
        self.batch_size, self.use_mixup = batch_size, use_mixup
        self.loader = EpochLoader(self.train_set, batch_size, seed, workers, device, self.weights,
                                  iterations)

    def batches(self, epoch: int):
        return self.loader(epoch)

    def steps_per_epoch(self) -> int:
        return len(self.loader)


class VolumeTask(_Segmentation):
    """The coarse 3D U-Net: one whole volume per step at its coarse in-plane size (thesis 5.3.2)."""

    def __init__(self, model, ds, train_ids, val_ids, loss, device, seed: int = 0,
                 eval_batch: int = 16, threshold: float = 0.5, iterations: int = 0):
        super().__init__(model, ds, val_ids, loss, device, seed, eval_batch, threshold)
        self.train_ids = [c for c in train_ids if ds.load(c)[1] is not None]
        self.iterations = int(iterations)

    def _order(self, epoch: int) -> list[int]:
        """This rank's volumes of one epoch, one per step: ``iterations`` of them (successive
        shuffles; over all ranks) when > 0, else one shuffled pass."""
        g = torch.Generator().manual_seed(self.seed * 100_003 + int(epoch))
        n = len(self.train_ids)
        count = self.iterations * world().size if self.iterations > 0 else n
        return shard(shuffled_passes(n, count, g), 1)

    def steps_per_epoch(self) -> int:
        return len(self._order(0))

    def batches(self, epoch: int):
        size = traits_of(self.model).coarse_size
        for i in self._order(epoch):  # one volume per step (per rank under torchrun)
            image, infection, _ = self.ds.load(self.train_ids[i])
            yield (to_coarse(torch.from_numpy(np.array(image, np.float32)), size),
                   to_coarse(torch.from_numpy(np.array(infection, np.float32)), size))


def calibration_region(image: np.ndarray, meta: dict) -> np.ndarray | None:
    """The pixels a case's calibration counts: a 2D slice image all of them (None); a CT volume
    those inside the image, where preprocessing left values (outside the lungs is exactly 0)."""
    return None if meta.get("slice_image") else np.asarray(image) != 0


def labelled_predictions(model, ds: PreprocessedDataset, case_ids, device, batch_size: int = 16,
                         tta: bool = False):
    """``(lesion probability, reference lesion, calibration region)`` on the preprocessed grid,
    one labelled case at a time (cases without a mask skipped); ``tta``: test-time mirroring."""
    for c in case_ids:
        image, infection, _ = ds.load(c)
        if infection is not None:
            image = np.asarray(image)
            yield (predict_volume(model, image, device, batch_size, tta=tta),
                   np.asarray(infection) > 0, calibration_region(image, ds.cases[c]))


def validation_scores(model, ds: PreprocessedDataset, case_ids, device, batch_size: int = 16,
                      threshold: float = 0.5) -> dict:
    """The per-epoch validation: ``val_volume_dice`` (mean 3D Dice over volumes on the
    preprocessed grid at ``threshold``) and the calibration of the same probabilities
    (:class:`~covidseg.train.calibration.Calibration`: ``val_lesion_probability``, ``val_ece``,
    ``val_background_confident``)."""
    scores, calibration = [], Calibration()
    for prob, ref, region in labelled_predictions(model, ds, case_ids, device, batch_size):
        scores.append(overlap_metrics(prob > threshold, ref)["dice"])
        calibration.add(prob, ref, region)
    out = {str(VAL_VOLUME_DICE): float(np.mean(scores)) if scores else float("nan")}
    out.update(keyed(calibration.summary(), Split.VAL))
    return out


def volume_dice(model, ds: PreprocessedDataset, case_ids, device, batch_size: int = 16,
                threshold: float = 0.5) -> float:
    """Mean 3D Dice over volumes on the preprocessed grid at ``threshold`` (a multi-class
    network's lesion union)."""
    scores = [overlap_metrics(prob > threshold, ref)["dice"]
              for prob, ref, _ in labelled_predictions(model, ds, case_ids, device, batch_size)]
    return float(np.mean(scores)) if scores else float("nan")


class RestorationSlices(Dataset):
    """Slices distorted Models Genesis-style: ``(distorted[1,H,W], original[1,H,W])``."""

    def __init__(self, slices: SliceDataset, distort: GenesisDistort, seed: int,
                 fixed: bool = False):
        self.slices, self.distort, self.seed, self.fixed = slices, distort, seed, fixed
        self._epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self._epoch = 0 if self.fixed else epoch
        self.slices.set_epoch(self._epoch)

    def __len__(self) -> int:
        return len(self.slices)

    def __getitem__(self, key):
        """As :meth:`SliceDataset.__getitem__`: ``i`` or ``(epoch, i)``."""
        epoch, i = key if isinstance(key, tuple) else (self._epoch, key)
        epoch = 0 if self.fixed else epoch
        image, _ = self.slices[(epoch, i)]
        rng = np.random.default_rng([self.seed, epoch, i, 7])
        x, target = self.distort(image[0].numpy(), rng)
        return torch.from_numpy(x[None]), torch.from_numpy(target[None])


class RestorationTask(_Base):
    """Self-supervised restoration: MSE between the network's output and the original slice."""

    monitor = str(MetricKey("restoration_mse", split=Split.VAL))
    monitor_mode = "min"

    def __init__(self, model, ds: PreprocessedDataset, train_ids, val_ids, device,
                 batch_size: int = 8, seed: int = 0, workers: int = 0, crop: int = 0,
                 augment=None, val_slices: int = 64, iterations: int = 0):
        self.model, self.device = model, device
        distort = GenesisDistort()
        self.train_set = RestorationSlices(
            SliceDataset(ds, train_ids, augment=augment, seed=seed, require_mask=False, crop=crop),
            distort, seed)
        val = RestorationSlices(SliceDataset(ds, val_ids, seed=seed, require_mask=False), distort,
                                seed + 1, fixed=True)
        val.set_epoch(0)
        pick = np.random.default_rng(seed).permutation(len(val))[:val_slices]
        self.val_batches = [torch.stack(t) for t in zip(*(val[int(i)] for i in pick))]
        self.loader = EpochLoader(self.train_set, batch_size, seed, workers, device,
                                  iterations=iterations)

    def batches(self, epoch: int):
        return self.loader(epoch)

    def steps_per_epoch(self) -> int:
        return len(self.loader)

    def training_step(self, batch, step: int):
        x, target = (t.to(self.device, non_blocking=True) for t in batch)
        return torch.nn.functional.mse_loss(self.train_model(x).float(), target), {}

    @torch.no_grad()
    def validate(self, epoch: int) -> dict:
        self.model.eval()
        x, target = self.val_batches
        errs = []
        for i in range(0, len(x), 16):
            out = self.model(x[i:i + 16].to(self.device)).float()
            errs.append(((out - target[i:i + 16].to(self.device)) ** 2).mean(dim=(1, 2, 3)))
        self.model.train()
        return {self.monitor: float(torch.cat(errs).mean())}
