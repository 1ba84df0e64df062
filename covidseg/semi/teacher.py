"""Semi-supervised training on unlabelled slices (the ``meanteacher`` stage runs it): the
fine-tuned model A' as student, an EMA copy as teacher (thesis 5.3.5), and one of two ways to
learn from the unlabelled slices (``method``):

* ``meanteacher`` (Tarvainen & Valpola 2017, "Mean teachers are better role models"): loss per
  step = supervised loss on labelled slices + ``pseudo_weight`` · pixel-weighted loss on
  pseudo-labelled items (a pseudolabel run's :class:`PseudoSet`; optional) + w(epoch) ·
  MSE(σ(student(strong(u))), σ(teacher(weak(u)))) on whole unlabelled slices u, outside the
  strong view's cut-out square (there the student sees nothing the target could be about);
* ``unimatch`` (Yang et al. 2023, "Revisiting weak-to-strong consistency in semi-supervised
  semantic segmentation"; FixMatch, Sohn et al. 2020): the teacher's weak-view prediction,
  thresholded at 0.5, is the target wherever it is confident (p ≥ ``confidence`` or
  p ≤ 1 − ``confidence``: lesion and background masked separately, their shares logged as
  ``confident_lesion_share`` / ``confident_background_share``); two strong views of each slice,
  each CutMix-ed with another slice of the batch (targets and masks mixed the same way), and a
  feature-perturbation branch (dropout on the encoder's features of the weak view) learn it with
  the supervised loss (CE + Dice) on the confident pixels only: 0.25 + 0.25 for the strong views,
  0.5 for the perturbed features, as UniMatch weighs them.  The targets move: the teacher
  follows the student every step, so the pseudo-labels are refreshed online.

w ramps up as ``consistency_weight · exp(-5 (1 - t)²)``, t = epoch / ``rampup_epochs``.  Both
views share the slice's geometric augmentation (so predictions stay pixel-aligned); the weak view
adds light noise, a strong view a random contrast/brightness change and stronger noise.  Every
student input of a step — labelled, pseudo-labelled and strong views — goes through the network
in **one** forward pass (batch-norm statistics of one batch, as the references do; inputs of
another size go in a pass of their own).  After each optimiser step θ_teacher ← α θ_teacher +
(1 - α) θ_student (``ema_alpha``; floating buffers such as batch-norm statistics follow the same
average).  Both networks are validated every epoch; the better one is kept, and the starting
model is scored before the first step and kept if no epoch beats it.  It is the one training
loop with a different task: loss terms and an EMA hook, not a second loop.  The views, CutMix
and the feature dropout are in :mod:`covidseg.semi.views`.
"""

from __future__ import annotations

import copy
import logging
import math

import numpy as np
import torch

from covidseg.base.device import place_model
from covidseg.data.slices import SliceDataset, pad_to
from covidseg.semi.pseudoset import PseudoSet
from covidseg.semi.views import (
    confident_targets,
    cutmix,
    forward_together,
    has_feature_encoder,
    strong_view,
    weak_view,
)
from covidseg.semi.vocabulary import SemiMethod
from covidseg.train.distributed import world
from covidseg.train.tasks import EpochLoader, SegmentationTask, volume_dice

log = logging.getLogger("covidseg.semi")


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




class MeanTeacherTask(SegmentationTask):
    """The student (``model``), its EMA teacher, and the mean-teacher consistency on unlabelled
    slices; :class:`UniMatchTask` replaces the consistency by confidence-masked weak-to-strong
    targets."""

    method = "meanteacher"

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
        self.oracle = bool(getattr(unlabelled, "oracle", False))
        # unlabelled slices come from a loader of their own (augmented in its workers), as many
        # batches an epoch as the labelled loader gives
        self.u_loader = (EpochLoader(unlabelled, self.batch_size, self.seed + 7919,
                                     self.loader.loader.num_workers, self.device,
                                     iterations=self.steps_per_epoch())
                         if unlabelled is not None and len(unlabelled) and consistency_weight > 0
                         else None)
        self._epoch, self.best_is = 0, "student"

    def batches(self, epoch: int):
        self._epoch = epoch
        w = world()  # under torchrun each rank draws its own pseudo-labelled items
        g = np.random.default_rng([self.seed, epoch, 11, *([w.rank] if w.active else [])])
        n = self.batch_size
        unlabelled = iter(self.u_loader(epoch)) if self.u_loader is not None else None
        for batch in super().batches(epoch):
            p_idx = g.integers(0, len(self.p_images), n) if len(self.p_images) else np.zeros(0, int)
            u = truth = torch.zeros((0, 1, 32, 32))
            if unlabelled is not None:
                u, truth = next(unlabelled, (u, truth))
            yield (*batch, self.p_images[p_idx], self.p_masks[p_idx], self.p_weights[p_idx], u,
                   truth)

    def consistency_factor(self) -> float:
        return self.cons_weight * sigmoid_rampup(self._epoch, self.rampup)

    @torch.no_grad()
    def teacher_probability(self, u: torch.Tensor) -> torch.Tensor:
        """The teacher's lesion probability on the weak view of ``u`` (float32)."""
        self.teacher.eval()
        return torch.sigmoid(self.teacher(weak_view(u)).float())

    def training_step(self, batch, step: int):
        images, masks, p_img, p_msk, p_w, u_img, u_truth = self.to_device(batch)
        w = self.consistency_factor()
        views, context = (self.unlabelled_views(u_img) if len(u_img) and w > 0
                          else ([], None))
        if context is not None and self.oracle:
            context["truth"] = u_truth
        parts = [images, weak_view(p_img), *views]
        perturb = len(parts) - 1 if context is not None and context.get("perturb") else None
        outs = forward_together(self.train_model, parts, perturb)
        supervised = self.loss(outs[0], masks)
        pseudo = (self.loss(outs[1], p_msk, weight=p_w) if len(p_img) else supervised * 0)
        consistency, logs = supervised * 0, {}
        if views:
            consistency, logs = self.unlabelled_loss(outs[2:], context)
        total = supervised + self.pseudo_weight * pseudo + w * consistency
        return total, {"loss_supervised": supervised.detach(), "loss_pseudo": pseudo.detach(),
                       "loss_consistency": consistency.detach(), "consistency_weight": w,
                       **logs}

    def unlabelled_views(self, u: torch.Tensor) -> tuple[list, dict]:
        """The student's inputs made of unlabelled slices ``u``, and what their loss needs."""
        target = self.teacher_probability(u)
        strong, kept = strong_view(u, with_kept=True)
        return [strong], {"target": target, "kept": kept}

    def unlabelled_loss(self, outs: list, context: dict) -> tuple[torch.Tensor, dict]:
        """MSE of the sigmoids outside the cut-out square."""
        kept = context["kept"].expand_as(outs[0])
        error = (torch.sigmoid(outs[0].float()) - context["target"]) ** 2
        return (error * kept).sum() / kept.sum().clamp_min(1.0), {}

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


class UniMatchTask(MeanTeacherTask):
    """Confidence-masked weak-to-strong consistency (UniMatch): see the module docstring."""

    method = "unimatch"

    def __init__(self, *args, confidence: float = 0.95, **kw):
        super().__init__(*args, **kw)
        self.confidence = confidence
        self.perturb = has_feature_encoder(self.model)
        if not self.perturb:
            log.warning("%s has no smp-style encoder: unimatch runs without its feature "
                        "perturbation branch", type(self.model).__name__)

    def unlabelled_views(self, u: torch.Tensor) -> tuple[list, dict]:
        target, confident = confident_targets(self.teacher_probability(u), self.confidence)
        views, pairs = [], []
        for _ in range(2):
            mixed, t, c = cutmix(strong_view(u, cutout=0.0), target, confident)
            views.append(mixed)
            pairs.append((t, c))
        context = {"pairs": pairs, "target": target, "confident": confident,
                   "perturb": self.perturb}
        if self.perturb:  # the weak view, its encoder features dropped in the shared pass
            views.append(weak_view(u))
        return views, context

    def unlabelled_loss(self, outs: list, context: dict) -> tuple[torch.Tensor, dict]:
        strong = [self.loss(o, t, weight=c) for o, (t, c) in zip(outs[:2], context["pairs"])]
        target, confident = context["target"], context["confident"]
        if context["perturb"]:
            loss = 0.25 * (strong[0] + strong[1]) + 0.5 * self.loss(outs[2], target,
                                                                    weight=confident)
        else:
            loss = 0.5 * (strong[0] + strong[1])
        lesion = (confident * target).mean()
        logs = {"confident_lesion_share": lesion.detach(),
                "confident_background_share": (confident.mean() - lesion).detach()}
        if "truth" in context:  # phantoms: how right the confident targets are (never trained on)
            truth = (context["truth"] > 0.5).to(target.dtype)
            right = (confident * (target == truth).to(target.dtype)).sum()
            logs["oracle_confident_precision"] = (right / confident.sum().clamp_min(1)).detach()
            logs["oracle_confident_recall"] = ((confident * target * truth).sum()
                                               / truth.sum().clamp_min(1)).detach()
        return loss, logs


METHODS = {SemiMethod.MEANTEACHER: MeanTeacherTask, SemiMethod.UNIMATCH: UniMatchTask}
