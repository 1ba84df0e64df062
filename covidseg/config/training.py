"""The parameters of the stages that train a network: what every training shares
(:class:`TrainingConfig`), ``pretrain``, the recipes and what ``finetune`` and ``meanteacher``
share (:class:`SupervisedConfig`), and ``finetune``."""

from __future__ import annotations

from dataclasses import dataclass

from covidseg.config.params import CommonConfig, param, viewers_param
from covidseg.data.vocabulary import Regime
from covidseg.models.vocabulary import Strategy
from covidseg.train.vocabulary import DiceMode, Loss


def _arch():
    return param("unet", "architecture: an smp name (unet, unetplusplus, fpn, …), attention-unet "
                         "or genesis-unet")


def _encoder():
    return param("resnet34", "encoder (smp encoder name; weights never downloaded)")


def _encoder_weights():
    return param("", "local encoder weight file (state dict), e.g. ImageNet")



@dataclass
class TrainingConfig(CommonConfig):
    """What every stage that trains a network shares (they all run the one training loop).

    For finetune and meanteacher, the parameters a recipe sets (:data:`RECIPES`) default to
    "the recipe's" — ``""`` for a name, ``-1`` for a number (``0`` for ``lr``) — and
    :meth:`SupervisedConfig.__post_init__` fills them in, so that a value given explicitly always
    wins and the logged parameters are the values that ran.  pretrain has fixed defaults."""

    image_size: int = param(0, "random training crop side in pixels (0: whole padded slices)")
    epochs: int = param(0, "epochs of iterations_per_epoch optimiser steps each, a validation "
                           "after each (0: the plan's — finetune and meanteacher derive it "
                           "from the dataset, see plan.json)")
    iterations_per_epoch: int = param(0, "optimiser steps per epoch (0: finetune and "
                                         "meanteacher the plan's — one pass over the training "
                                         "slices with recipe=thesis; pretrain one pass)")
    patience: int = param(-1, "early stop after this many epochs without validation improvement "
                              "(0: never; -1: the recipe's)")
    batch_size: int = param(8, "slices per batch (per process under torchrun: the global batch "
                               "is batch_size × processes)")
    optimizer: str = param("", "optimiser (sgd: Nesterov, momentum 0.99; empty: the recipe's)",
                           ("", "adamw", "sgd", "adam"))
    lr: float = param(0.0, "peak learning rate (0: the recipe's)", search=(1e-4, 1e-2, "log"))
    weight_decay: float = param(-1.0, "weight decay (adamw: decoupled; sgd/adam: L2; -1: the "
                                      "recipe's)", search=(1e-6, 1e-2, "log"),
                                searched_by_default=False)
    schedule: str = param("", "learning rate per iteration after the warm-up: cosine or poly (to "
                              "0 at the last iteration), step (×lr_gamma every lr_step epochs: "
                              "the thesis); empty: the recipe's", ("", "cosine", "poly", "step"))
    warmup: int = param(-1, "linear warm-up in iterations, at most a fifth of the run (-1: the "
                            "recipe's)")
    lr_step: int = param(25, "schedule=step: epochs between decays", search=(5, 50),
                         searched_by_default=False)
    lr_gamma: float = param(0.8, "schedule=step: decay factor", search=(0.5, 0.95),
                            searched_by_default=False)
    grad_clip: float = param(-1.0, "clip the gradient norm to this (0: off; -1: the recipe's)")
    keep: str = param("", "the model kept: last (the final weights: the schedule ends at lr 0, "
                          "and no held-out case chooses them) or best (by validation Dice, the "
                          "thesis); empty: the recipe's", ("", "last", "best"))
    lesion_boost: float = param(1.0, "draw slices that contain lesion this many times more often")
    checkpoint_every: int = param(100, "log an intermediate checkpoint (float16) every N "
                                       "iterations for SVCCA (thesis: 100), the first 10, then the "
                                       "spacing "
                                       "doubles as the run's length does (0: off)")
    workers: int = param(-1, "DataLoader worker processes (-1: from the CPU count)")
    amp: bool = param(True, "mixed precision on CUDA (bf16 where supported, else fp16)")
    sync_bn: bool = param(False, "under torchrun on CUDA: BatchNorm statistics over the global "
                                 "batch (SyncBatchNorm); false: each process's own batch")
    resume: str = param("", "run id of a killed run to continue in that same run (with the "
                            "same number of processes)")


@dataclass
class PretrainConfig(TrainingConfig):
    arch: str = _arch()
    encoder: str = _encoder()
    encoder_weights: str = _encoder_weights()
    mode: str = param("restoration", "self-supervised restoration or supervised non-COVID",
                      ("restoration", "supervised"))
    epochs: int = param(100, "maximum epochs (of one pass over the slices each, unless "
                             "iterations_per_epoch is set)")
    optimizer: str = param("adam", "optimiser (sgd: Nesterov, momentum 0.99)",
                           ("adamw", "sgd", "adam"))
    lr: float = param(1e-3, "peak learning rate")
    weight_decay: float = param(0.0, "weight decay (adamw: decoupled; sgd/adam: L2)")
    schedule: str = param("step", "learning rate per iteration after the warm-up: cosine, "
                                  "poly, or step (×lr_gamma every lr_step epochs)",
                          ("cosine", "poly", "step"))
    warmup: int = param(0, "linear warm-up (iterations, at most a fifth of the run)")
    grad_clip: float = param(0.0, "clip the gradient norm to this (0: off)")
    keep: str = param("best", "the model kept: best (by validation restoration error) or last",
                      ("last", "best"))
    patience: int = param(20, "early stop after this many epochs without validation improvement "
                              "(0: never)")


# What a recipe sets (SupervisedConfig.recipe), in place of every parameter left at "the
# recipe's".  covidseg: nnU-Net's 2D recipe (AdamW, warm-up + cosine, batch Dice + CE, strong
# augmentation), cross-validated on real CT slices in docs/benchmarks.md, "The training recipe
# on real CT" (at full size +0.013 Dice over a bare smp loop, not yet the +0.03 sought);
# thesis: Adam 2e-4, StepLR ×0.8 / 25 epochs (of one pass: the plan), 500 epochs, early stop
# after 30, the best epoch, per-sample Dice, the mild augmentation (augmentation()).
RECIPES = {
    "covidseg": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "schedule": "cosine",
                 "warmup": 50, "grad_clip": 12.0, "patience": 0, "keep": "last",
                 "dice": "batch"},
    "thesis": {"optimizer": "adam", "lr": 2e-4, "weight_decay": 0.0, "schedule": "step",
               "warmup": 0, "grad_clip": 0.0, "patience": 30, "keep": "best", "dice": "sample"},
}
RECIPE_AUTO = {"optimizer": "", "lr": 0.0, "weight_decay": -1.0, "schedule": "", "warmup": -1,
               "grad_clip": -1.0, "patience": -1, "keep": "", "dice": ""}


@dataclass
class SupervisedConfig(TrainingConfig):
    """What the stages that train on labelled volumes share (finetune, meanteacher)."""

    recipe: str = param("covidseg", "training recipe: covidseg (AdamW 1e-3, warm-up + cosine in "
                                    "iterations, batch Dice + CE, strong augmentation, the last "
                                    "weights) or thesis (Adam 2e-4, StepLR, 500 epochs of one "
                                    "pass, early stop 30, the best epoch, per-sample Dice, mild "
                                    "augmentation); fills every parameter left at 'the "
                                    "recipe's'", ("covidseg", "thesis"))
    loss: str = param("ce+dice", "loss", Loss.values())
    dice: str = param("", "the Dice term: batch (summed over the whole batch, nnU-Net's "
                          "batch_dice) or sample (per image, smoothing 1: the thesis); empty: "
                          "the recipe's", ("", *DiceMode.values()))
    pos_weight: float = param(0.0, "ce: weight of the lesion class (0: unweighted)")
    fold: int = param(0, "cross-validation fold")
    regime: str = param("standard", "standard/40-10: train on k-1 folds; inverse/10-40: train on "
                                    "one",
                        Regime.values())
    train_cases: int = param(0, "labelled training volumes to use (0: all of the fold)")
    mixup: bool = param(False, "mixup of images and masks (soft labels)")
    augment: str = param("auto", "training augmentation: strong (nnU-Net's strength: rotation, "
                                 "scale 0.7-1.4, noise, blur, brightness, contrast, low "
                                 "resolution, gamma), ct (thesis: rotation ±3°, elastic, gamma, "
                                 "noise), slice (round two's mild 2D preset), none; a preset's "
                                 "settings after it: strong,rotate_deg=15,scale=0.8:1.25; auto = "
                                 "strong (recipe=thesis: slice for 2D slice sets, else ct)")
    threshold: str = param("0.5", "decision threshold of the lesion probability, stored with the "
                                  "model and used by predict/evaluate: a probability, or auto = "
                                  "the one that maximises the mean volume Dice on the validation "
                                  "cases", search=(0.2, 0.8), searched_by_default=False)
    tta: bool = param(False, "test-time mirroring (the mean over each slice and its 3 in-plane "
                             "mirror images) in the final evaluation; stored with the model, so "
                             "predict/evaluate use it unless told otherwise")
    cv: int = param(0, "cross-validation: K > 1 trains one nested run per fold (fold 0..K-1 of "
                       "the dataset's folds, each its own model), logs the out-of-fold Dice "
                       "table and an ensemble model (the mean of the fold models' "
                       "probabilities: every labelled case trains it); 0: one run on fold")
    overlays: int = param(3, "cases per split shown in overlay figures")
    viewers: int = viewers_param("test cases (the largest lesions) each")
    register_as: str = param("", "register the best model under this name")
    alias: str = param("", "give the registered version this alias (e.g. champion: "
                           "predict -P model=models:/NAME@champion); needs register_as")

    def __post_init__(self):
        # what the recipe filled in, logged as recipe_<name> (runs.start_run): under `mlflow run`
        # the parameter itself was logged as given ('' / -1 / 0) before covidseg started
        self.recipe_filled = apply_recipe(self, RECIPES.get(self.recipe, RECIPES["covidseg"]))


def apply_recipe(cfg, recipe: dict) -> dict:
    """Put ``recipe``'s values in place of the parameters of ``cfg`` left at "the recipe's"
    (:data:`RECIPE_AUTO`); a parameter given explicitly wins.  Returns what it filled in."""
    filled = {}
    for name, value in recipe.items():
        if getattr(cfg, name) == RECIPE_AUTO[name]:
            setattr(cfg, name, value)
            filled[name] = value
    return filled


@dataclass
class FinetuneConfig(SupervisedConfig):
    arch: str = _arch()
    encoder: str = _encoder()
    encoder_weights: str = _encoder_weights()
    init: str = param("scratch", "scratch, a pretrain/finetune run id or model URI, or a Models "
                                 "Genesis checkpoint file (then arch=genesis-unet)")
    strategy: str = param("all", "which weights train: all (re-initialises the last decoder "
                                 "block and the head), decoder (whole encoder frozen), "
                                 "freeze-encoder-half (the first ceil(L/2) of the encoder's L "
                                 "resolution levels frozen, head re-initialised)",
                          Strategy.values())
