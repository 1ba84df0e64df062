"""``meanteacher``: the fine-tuned model A' as student, an EMA copy as teacher (thesis 5.3.5).

Loss per step = supervised loss on labelled slices
              + similarity-weighted soft-mask loss on pseudo-labelled patches
              + w(epoch) · MSE(σ(student(x + n₁)), σ(teacher(x + n₂))) on unlabelled patches,
with w ramping up as ``consistency_weight · exp(-5 (1 - t)²)``, t = epoch / ``rampup_epochs``.
After each optimiser step θ_teacher ← α θ_teacher + (1 - α) θ_student (``ema_alpha``; floating
buffers such as batch-norm statistics follow the same average).  Both networks are validated
every epoch; the better one is kept.  It is the one training loop with a different task: a loss
term and an EMA hook, not a second loop.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch

from covidseg.config import MeanteacherConfig
from covidseg.data.slices import pad_to
from covidseg.data.store import open_dataset
from covidseg.device import place_model, resolve_device
from covidseg.errors import ConfigError
from covidseg.models.checkpoint import load_model
from covidseg.models.factory import ModelSpec
from covidseg.semi.pseudolabel import load_pseudo_set
from covidseg.tracking import NullTracker, download_model
from covidseg.train.finetune import (
    finalise_segmentation,
    segmentation_task,
    training_cases,
)
from covidseg.train.stage import model_extra, run_training, seed_everything
from covidseg.train.tasks import SegmentationTask, volume_dice


def sigmoid_rampup(epoch: int, rampup_epochs: int) -> float:
    if rampup_epochs <= 0:
        return 1.0
    t = min(1.0, max(0.0, epoch / rampup_epochs))
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, alpha: float) -> None:
    """θ' ← α θ' + (1 - α) θ for every parameter and floating buffer."""
    t_params = [p for p in teacher.parameters()]
    s_params = [p.detach() for p in student.parameters()]
    torch._foreach_mul_(t_params, alpha)
    torch._foreach_add_(t_params, s_params, alpha=1.0 - alpha)
    for tb, sb in zip(teacher.buffers(), student.buffers()):
        if tb.dtype.is_floating_point:
            tb.mul_(alpha).add_(sb, alpha=1.0 - alpha)
        else:
            tb.copy_(sb)


def _pad_patches(images: np.ndarray, multiple: int = 32) -> torch.Tensor:
    if len(images) == 0:
        return torch.zeros((0, 1, multiple, multiple))
    side = -(-images.shape[-1] // multiple) * multiple
    return torch.from_numpy(np.stack([pad_to(np.asarray(p, np.float32), (side, side))
                                      for p in images]))[:, None]


class MeanTeacherTask(SegmentationTask):
    def __init__(self, *args, pseudo: dict, ema_alpha: float, consistency_weight: float,
                 rampup_epochs: int, noise_std: float = 0.1, **kw):
        super().__init__(*args, **kw)
        self.teacher = place_model(copy.deepcopy(self.model), self.device)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.alpha, self.cons_weight, self.rampup = ema_alpha, consistency_weight, rampup_epochs
        self.noise_std = noise_std
        self.p_images = _pad_patches(pseudo["images"])
        self.p_masks = _pad_patches(pseudo["masks"])
        self.p_weights = torch.from_numpy(np.asarray(pseudo["weights"], np.float32))
        self.u_images = _pad_patches(pseudo["unlabelled_images"])
        self._epoch, self.best_is = 0, "student"

    def batches(self, epoch: int):
        self._epoch = epoch
        g = np.random.default_rng([self.seed, epoch, 11])
        loader = super().batches(epoch)
        n = self.batch_size
        for batch in loader:
            p_idx = g.integers(0, len(self.p_images), n) if len(self.p_images) else np.zeros(0, int)
            u_idx = g.integers(0, len(self.u_images), n) if len(self.u_images) else np.zeros(0, int)
            yield (*batch, self.p_images[p_idx], self.p_masks[p_idx], self.p_weights[p_idx],
                   self.u_images[u_idx])

    def consistency_factor(self) -> float:
        return self.cons_weight * sigmoid_rampup(self._epoch, self.rampup)

    def training_step(self, batch, step: int):
        images, masks, p_img, p_msk, p_w, u_img = self.to_device(batch)
        supervised = self.loss(self.model(images), masks)
        pseudo = self.loss(self.model(p_img), p_msk, weight=p_w) if len(p_img) else supervised * 0
        consistency = supervised * 0
        w = self.consistency_factor()
        if len(u_img) and w > 0:
            noisy = lambda x: x + self.noise_std * torch.randn_like(x) * (x != 0)  # noqa: E731
            student = torch.sigmoid(self.model(noisy(u_img)))
            with torch.no_grad():
                self.teacher.eval()
                teacher = torch.sigmoid(self.teacher(noisy(u_img)))
            consistency = torch.mean((student.float() - teacher.float()) ** 2)
        total = supervised + pseudo + w * consistency
        return total, {"loss_supervised": supervised.detach(), "loss_pseudo": pseudo.detach(),
                       "loss_consistency": consistency.detach(), "consistency_weight": w}

    def after_step(self, step: int) -> None:
        ema_update(self.teacher, self.model, self.alpha)

    def validate(self, epoch: int) -> dict:
        student = volume_dice(self.model, self.ds, self.val_ids, self.device, self.eval_batch)
        teacher = volume_dice(self.teacher, self.ds, self.val_ids, self.device, self.eval_batch)
        return {"val_volume_dice_student": student, "val_volume_dice_teacher": teacher,
                "val_volume_dice": max(student, teacher)}

    def best_network(self, metrics: dict):
        teacher_wins = metrics.get("val_volume_dice_teacher", -1) >= metrics.get("val_volume_dice_student", 0)
        self.best_is = "teacher" if metrics and teacher_wins else "student"
        return self.teacher if self.best_is == "teacher" else self.model

    def state(self) -> dict:
        return {"teacher": self.teacher.state_dict(), "best_is": self.best_is}

    def load_state(self, state: dict) -> None:
        if "teacher" in state:
            self.teacher.load_state_dict(state["teacher"])
            self.best_is = state.get("best_is", "student")


def meanteacher(cfg: MeanteacherConfig, tracker=None, on_epoch_end=None, progress: bool = True) -> dict:
    tracker = tracker or NullTracker()
    if not cfg.model or not cfg.pseudo:
        raise ConfigError("meanteacher needs model=<finetune run> and pseudo=<pseudolabel run>")
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    ds = open_dataset(cfg.data, tracker)
    model_dir, model_run = download_model(cfg.model)
    tracker.link_source("model", model_run)
    pseudo, pseudo_run = load_pseudo_set(cfg.pseudo)
    tracker.link_source("pseudo", pseudo_run)
    model, config = load_model(model_dir)
    spec = ModelSpec(**config["model"])
    train_ids, val_ids = training_cases(ds, cfg)
    tracker.set_tags({"covidseg.arch": spec.arch, "covidseg.encoder": spec.encoder,
                      "covidseg.device": str(device)})
    tracker.log_metrics({"train_volumes": len(train_ids), "val_volumes": len(val_ids),
                         "pseudo_patches": len(pseudo["images"]),
                         "unlabelled_patches": len(pseudo["unlabelled_images"])})
    tracker.log_dict({"train": train_ids, "val": val_ids, "test": ds.splits["test"]}, "split.json")
    task = segmentation_task(model, ds, train_ids, val_ids, cfg, device, cls=MeanTeacherTask,
                             pseudo=pseudo, ema_alpha=cfg.ema_alpha,
                             consistency_weight=cfg.consistency_weight,
                             rampup_epochs=cfg.rampup_epochs)
    extra = model_extra(ds, cfg, "segmentation", "meanteacher")
    result, workdir = run_training(task, cfg, device, tracker, spec, extra, on_epoch_end, progress)
    tracker.set_tags({"covidseg.best_network": task.best_is})
    summary = finalise_segmentation(model, spec, result, workdir, ds, cfg, tracker, device,
                                    train_ids, val_ids, {**extra, "best_network": task.best_is})
    return {**summary, "best_network": task.best_is}
