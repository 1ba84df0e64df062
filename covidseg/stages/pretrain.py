"""``pretrain``: a starting point for finetune without downloading one.

* ``mode=restoration`` — Models Genesis-style self-supervised restoration on every non-test
  volume (labelled or not): the network restores distorted slices (MSE);
* ``mode=supervised`` — binary segmentation of the non-COVID labelled volumes (``splits.auxiliary``:
  MSD tumours, NSCLC effusions, the demo's nodules).

Output: the best network as the run's ``model/`` artifacts (``model.json`` + ``model.pt``), which
``finetune -P init=<this run id>`` loads.
"""

from __future__ import annotations

import numpy as np

from covidseg.base.errors import ConfigError
from covidseg.config import PretrainConfig
from covidseg.data.augment import SliceAugment
from covidseg.models.factory import ModelSpec, build_model
from covidseg.stages.datasets import open_dataset
from covidseg.stages.settings import model_extra
from covidseg.stages.stage import Stage
from covidseg.train.distributed import from_main
from covidseg.train.losses import SegmentationLoss
from covidseg.train.metric_keys import MetricKey, Moment
from covidseg.train.tasks import RestorationTask, SegmentationTask, default_workers


def split_cases(ids: list[str], seed: int, val_fraction: float) -> tuple[list[str], list[str]]:
    ids = sorted(ids)
    perm = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    n_val = max(1, int(round(len(ids) * val_fraction)))
    return sorted(perm[n_val:]), sorted(perm[:n_val])


def pretrain(cfg: PretrainConfig, tracker=None, progress: bool = True) -> dict:
    stage = Stage.begin(cfg, tracker, progress=progress)
    tracker, device = stage.tracker, stage.device
    ds = stage.ds = from_main(lambda: open_dataset(cfg.data, tracker))  # torchrun: rank 0 alone
    spec = ModelSpec(arch=cfg.arch, encoder=cfg.encoder)
    model = build_model(spec, cfg.encoder_weights or None)
    workers = default_workers(cfg.workers)
    if cfg.mode == "supervised":
        ids = ds.splits.auxiliary or []
        if len(ids) < 2:
            raise ConfigError(f"mode=supervised needs at least 2 labelled non-COVID volumes "
                              f"(splits.auxiliary); this dataset has {len(ids)}: "
                              "use mode=restoration")
        train_ids, val_ids = split_cases(ids, cfg.seed, 0.2)
        loss = SegmentationLoss("ce+dice", dice="sample")  # pretrain keeps the thesis's loss
        task = SegmentationTask(model, ds, train_ids, val_ids, loss, device,
                                batch_size=cfg.batch_size, seed=cfg.seed, workers=workers,
                                augment=SliceAugment(), crop=cfg.image_size,
                                lesion_boost=cfg.lesion_boost, iterations=cfg.iterations_per_epoch)
    else:
        test = set(ds.splits.test)
        ids = [c for c in ds.ids() if c not in test]
        if len(ids) < 2:
            raise ConfigError("mode=restoration needs at least 2 non-test volumes; there are "
                              f"{len(ids)}")
        train_ids, val_ids = split_cases(ids, cfg.seed, 0.1)
        task = RestorationTask(model, ds, train_ids, val_ids, device, batch_size=cfg.batch_size,
                               seed=cfg.seed, workers=workers, crop=cfg.image_size,
                               iterations=cfg.iterations_per_epoch)
    stage.record_split(train_ids, val_ids)
    extra = model_extra(ds, cfg, cfg.mode, "pretrain")
    result = stage.train(task, spec, extra)
    if not stage.is_main:
        return None  # rank 0 logs the model
    model.load_state_dict(result.best_state)
    model_dir = stage.save_final_model(model, spec, {**extra, "best_epoch": result.best_epoch,
                                                     task.monitor: result.best_score})
    tracker.log_artifacts(model_dir, "model")
    stage.finish()
    return {"mode": cfg.mode, "best_epoch": result.best_epoch,
            str(MetricKey.parse(task.monitor).at(Moment.BEST)): round(result.best_score, 4),
            "run_id": tracker.run_id,
            "model_dir": str(model_dir) if not tracker.enabled else "model/"}
