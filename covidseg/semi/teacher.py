"""The mean teacher (the ``meanteacher`` stage runs it): the fine-tuned model A' as student, an
EMA copy as teacher (thesis 5.3.5).

Loss per step = supervised loss on labelled slices
              + ``pseudo_weight`` · pixel-weighted loss on pseudo-labelled items (a pseudolabel
                run's :class:`PseudoSet`: similarity patches or self-training slices; optional)
              + w(epoch) · MSE(σ(student(strong(u))), σ(teacher(weak(u)))) on whole unlabelled
                slices u,
with w ramping up as ``consistency_weight · exp(-5 (1 - t)²)``, t = epoch / ``rampup_epochs``.
Both views share the slice's geometric augmentation (so predictions stay pixel-aligned); the
teacher's *weak* view adds light noise, the student's *strong* view a random contrast/brightness
change, stronger noise and a cut-out square (FixMatch-style weak/strong views).  Every
unlabelled slice on tissue can be drawn, not only the sampled patches.
After each optimiser step θ_teacher ← α θ_teacher + (1 - α) θ_student (``ema_alpha``; floating
buffers such as batch-norm statistics follow the same average).  Both networks are validated
every epoch; the better one is kept.  It is the one training loop with a different task: loss
terms and an EMA hook, not a second loop.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch

from covidseg.data.slices import SliceDataset, pad_to
from covidseg.device import place_model
from covidseg.semi.pseudoset import PseudoSet
from covidseg.train.distributed import world
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


def _padded(arrays: np.ndarray, multiple: int = 32) -> torch.Tensor:
    """(n, 1, H', W') float32 with H', W' the next multiples of ``multiple``."""
    if len(arrays) == 0:
        return torch.zeros((0, 1, multiple, multiple))
    H, W = (-(-s // multiple) * multiple for s in arrays.shape[1:])
    return torch.from_numpy(np.stack([pad_to(np.asarray(a, np.float32), (H, W))
                                      for a in arrays]))[:, None]


def weak_view(x: torch.Tensor, noise: float = 0.05) -> torch.Tensor:
    """Light noise on tissue (background 0 stays 0)."""
    return x + noise * torch.randn_like(x) * (x != 0)


def strong_view(x: torch.Tensor, contrast: float = 0.25, noise: float = 0.2,
                cutout: float = 0.25) -> torch.Tensor:
    """Random contrast and brightness, stronger noise (on tissue) and one zeroed square of side
    ``cutout`` × the image side per image."""
    n, _, H, W = x.shape
    tissue = (x != 0).to(x.dtype)
    scale = 1 + contrast * (2 * torch.rand((n, 1, 1, 1), device=x.device) - 1)
    shift = contrast * (2 * torch.rand((n, 1, 1, 1), device=x.device) - 1)
    y = (x * scale + shift + noise * torch.randn_like(x)) * tissue
    if cutout > 0:
        h, w = max(1, int(H * cutout)), max(1, int(W * cutout))
        ys = torch.randint(0, H - h + 1, (n,), device=x.device)
        xs = torch.randint(0, W - w + 1, (n,), device=x.device)
        rows = torch.arange(H, device=x.device)[None, :, None]
        cols = torch.arange(W, device=x.device)[None, None, :]
        box = ((rows >= ys[:, None, None]) & (rows < (ys + h)[:, None, None])
               & (cols >= xs[:, None, None]) & (cols < (xs + w)[:, None, None]))
        y = y * (~box[:, None]).to(y.dtype)
    return y


class MeanTeacherTask(SegmentationTask):
    def __init__(self, *args, pseudo: PseudoSet | None, unlabelled: SliceDataset | None,
                 ema_alpha: float, consistency_weight: float, rampup_epochs: int,
                 pseudo_weight: float = 1.0, **kw):
        super().__init__(*args, **kw)
        self.teacher = place_model(copy.deepcopy(self.model), self.device)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.alpha, self.cons_weight, self.rampup = ema_alpha, consistency_weight, rampup_epochs
        self.pseudo_weight = pseudo_weight
        empty = np.zeros((0, 32, 32), np.float32)
        self.p_images = _padded(pseudo.images if pseudo is not None else empty)
        self.p_masks = _padded(pseudo.masks if pseudo is not None else empty)
        self.p_weights = _padded(pseudo.weights if pseudo is not None else empty)
        self.unlabelled = unlabelled
        self._epoch, self.best_is = 0, "student"

    def batches(self, epoch: int):
        self._epoch = epoch
        w = world()  # under torchrun each rank draws its own pseudo-labelled/unlabelled items
        g = np.random.default_rng([self.seed, epoch, 11, *([w.rank] if w.active else [])])
        n = self.batch_size
        n_u = len(self.unlabelled) if self.unlabelled is not None else 0
        for batch in super().batches(epoch):
            p_idx = g.integers(0, len(self.p_images), n) if len(self.p_images) else np.zeros(0, int)
            u = torch.zeros((0, 1, 32, 32))
            if n_u and self.cons_weight > 0:
                u = torch.stack([self.unlabelled[(epoch, int(i))][0]
                                 for i in g.integers(0, n_u, n)])
            yield (*batch, self.p_images[p_idx], self.p_masks[p_idx], self.p_weights[p_idx], u)

    def consistency_factor(self) -> float:
        return self.cons_weight * sigmoid_rampup(self._epoch, self.rampup)

    def training_step(self, batch, step: int):
        images, masks, p_img, p_msk, p_w, u_img = self.to_device(batch)
        supervised = self.loss(self.train_model(images), masks)
        pseudo = (self.loss(self.train_model(weak_view(p_img)), p_msk, weight=p_w)
                  if len(p_img) else supervised * 0)
        consistency = supervised * 0
        w = self.consistency_factor()
        if len(u_img) and w > 0:
            student = torch.sigmoid(self.train_model(strong_view(u_img)))
            with torch.no_grad():
                self.teacher.eval()
                teacher = torch.sigmoid(self.teacher(weak_view(u_img)))
            consistency = torch.mean((student.float() - teacher.float()) ** 2)
        total = supervised + self.pseudo_weight * pseudo + w * consistency
        return total, {"loss_supervised": supervised.detach(), "loss_pseudo": pseudo.detach(),
                       "loss_consistency": consistency.detach(), "consistency_weight": w}

    def after_step(self, step: int) -> None:
        ema_update(self.teacher, self.model, self.alpha)

    def validate(self, epoch: int) -> dict:
        student = volume_dice(self.model, self.ds, self.val_ids, self.device, self.eval_batch,
                              self.threshold)
        teacher = volume_dice(self.teacher, self.ds, self.val_ids, self.device, self.eval_batch,
                              self.threshold)
        return {"val_volume_dice_student": student, "val_volume_dice_teacher": teacher,
                "val_volume_dice": max(student, teacher)}

    def best_network(self, metrics: dict):
        teacher_wins = (metrics.get("val_volume_dice_teacher", -1)
                        >= metrics.get("val_volume_dice_student", 0))
        self.best_is = "teacher" if metrics and teacher_wins else "student"
        return self.teacher if self.best_is == "teacher" else self.model

    def state(self) -> dict:
        return {"teacher": self.teacher.state_dict(), "best_is": self.best_is}

    def load_state(self, state: dict) -> None:
        if "teacher" in state:
            self.teacher.load_state_dict(state["teacher"])
            self.best_is = state.get("best_is", "student")
