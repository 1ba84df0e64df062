"""Typed configuration: one dataclass per entry point, declared once.

The same dataclass feeds the command line (``covidseg NAME --key value`` and
``python entrypoints/NAME.py --key value``), the MLproject parameters (rendered from these
classes, see :func:`covidseg.cli.render_mlproject`) and later Optuna's search space.  Defaults are
the thesis's.  Optional text parameters use ``""`` for "not given" (MLproject needs a default).

Allowed values belong to the layer that uses them: the data layer's (layouts, tasks, intensity
schemes, lung methods, …) come from :mod:`covidseg.data.vocabulary`.  The layers below the stages
are handed their own settings objects, built from these by the stage (for data:
:func:`covidseg.stages.preprocess.preprocess_settings` and its siblings), never a config.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields

from covidseg.data.vocabulary import (
    Intensity,
    Labels,
    Layout,
    LungmaskModel,
    LungMethod,
    Regime,
    SliceFit,
    StoreDtype,
    Task,
)
from covidseg.errors import ConfigError
from covidseg.models.vocabulary import Strategy
from covidseg.redact import redact
from covidseg.semi.vocabulary import PseudoSource, SemiMethod
from covidseg.train.vocabulary import DiceMode, Loss


def param(default, help: str, choices: tuple | None = None, search: tuple | None = None,
          searched_by_default: bool = True):
    """A parameter: default, help text, allowed values, and its ``tune`` search range
    ``(low, high[, "log"])`` when Optuna may search it (``searched_by_default=False``: only when
    ``tune -P search=`` names it)."""
    return field(default=default, metadata={"help": help, "choices": choices, "search": search,
                                            "searched_by_default": searched_by_default})


def field_default(f):
    return f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]


def tta_value(text, model_config: dict) -> bool:
    """predict/evaluate's ``tta``: ``true``/``false``, or ``model`` = what the model stored."""
    if str(text).lower() == "model":
        return bool(model_config.get("tta", False))
    return str(text).lower() == "true"


def threshold_value(text, allowed: str | None = None, name: str = "threshold") -> float | None:
    """A decision threshold given as text: a probability in (0, 1), or None for the keyword
    ``allowed`` — ``auto`` (finetune/meanteacher: chosen on the validation cases) or ``model``
    (predict/evaluate: the one stored with the model); None accepts either."""
    if isinstance(text, (int, float)):
        value = float(text)
    elif str(text).strip().lower() in ((allowed,) if allowed else ("auto", "model")):
        return None
    else:
        try:
            value = float(text)
        except ValueError as exc:
            words = allowed or "auto/model"
            raise ConfigError(f"{name}={text!r} is not a probability or {words}") from exc
    if not 0.0 < value < 1.0:
        raise ConfigError(f"{name}={text!r} must lie between 0 and 1")
    return value


@dataclass
class CommonConfig:
    data: str = param("demo", "input data: 'demo' (synthetic phantoms), a data folder, or for "
                              "training stages a preprocess run id / runs:/ URI / preprocessed "
                              "folder (a raw folder is preprocessed as its plan says)")
    seed: int = param(0, "random seed (splits, sampling, initialisation)")
    experiment: str = param("", "MLflow experiment name (default: the entry point's name)")
    device: str = param("auto", "compute device", ("auto", "cpu", "cuda"))

    def validate(self) -> None:
        for f in fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise ConfigError(f"{f.name}={value!r} is not one of "
                                  f"{', '.join(map(str, choices))}")
            if f.name == "threshold":  # finetune/meanteacher: auto; predict/evaluate: model
                threshold_value(value, "model" if f.default == "model" else "auto")
        if getattr(self, "alias", "") and not getattr(self, "register_as", ""):
            raise ConfigError(f"alias={self.alias} needs register_as=NAME (an alias names a "
                              "registered version)")

    def to_params(self) -> dict[str, str]:
        """Parameters as MLflow records them (strings; '' for not given; credentials in a URL
        redacted: a logged parameter never holds a password)."""
        return {k: redact(_fmt(v)) for k, v in asdict(self).items()}


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return "" if v is None else str(v)


@dataclass
class PreprocessConfig(CommonConfig):
    dataset: str = param("auto", "layout adapter of the data folder",
                         ("auto", *Layout.values()))
    images: str = param("", "glob pattern of labelled images (dataset=glob), relative to data or "
                            "absolute (then data may stay demo/empty)")
    masks: str = param("", "glob pattern of their infection masks (dataset=glob)")
    test_images: str = param("", "glob pattern of the official test split's images (dataset=glob)")
    test_masks: str = param("", "glob pattern of the official test split's masks (dataset=glob)")
    unlabelled: str = param("", "glob pattern of unlabelled images (dataset=glob)")
    lungs: str = param("", "glob pattern of provided lung masks (dataset=glob), paired by name")
    task: str = param("", "what the masks mark: infection (COVID: trained and evaluated on) or "
                          "tumour, effusion, nodule, other (auxiliary: supervised pretraining); "
                          "empty = the adapter's (glob: infection)",
                      ("", *Task.values()))
    sources: str = param("", "a YAML/JSON file listing several sources to combine into one "
                             "dataset (each: data, dataset, task, role, name, glob patterns); "
                             "replaces data/dataset/images/…")
    intensity: str = param("auto", "intensity scheme, decided per case with auto: hu (Hounsfield "
                                   "units: lung window, z-score over the lungs), display (8-bit "
                                   "exports: every image mapped alike, 0…255 to -2…2), image "
                                   "(anything else: z-score per image)",
                           Intensity.values())
    lung_method: str = param("auto", "lung extraction: auto = lungmask if its weights are local, "
                                     "else classical; provided = the dataset's lung masks",
                             LungMethod.values())
    lung_weights: str = param("", "local lungmask weight file (never downloaded)")
    lung_model: str = param("R231CovidWeb", "lungmask model whose cached weights auto looks for",
                            LungmaskModel.values())
    image_size: int = param(0, "in-plane size: volumes are cropped/padded around the lungs on the "
                               "1 mm grid, 2D slices resized; 0 keeps the 1 mm grid as is")
    slice_fit: str = param("resize", "2D slices (image files and one-slice volumes): resize = "
                                     "longer side scaled to image_size, then padded square; pad = "
                                     "padded, scaled down only when larger (never cut)",
                           SliceFit.values())
    min_size: int = param(32, "refuse (as a failed case) images smaller than this in-plane "
                              "(pixels)")
    max_field_of_view_mm: float = param(1000.0, "refuse volumes whose in-plane field of view "
                                                "(size x spacing) is wider than this: CT bores "
                                                "are at most ~850 mm, a wrong spacing is not")
    max_voxels: float = param(1e9, "refuse volumes whose 1 mm grid would hold more voxels than "
                                   "this (1e9: 4 GB as float32; 0: no cap)")
    labels: str = param("binary", "infection masks: binary (0/1 or 0/255), or multiclass (0 "
                                  "background, 1 ground-glass, 2 consolidation: trained as 3 "
                                  "classes, scored per class and for their union)",
                        Labels.values())
    window_min: float = param(-1250.0, "lung window lower bound (HU)")
    window_max: float = param(250.0, "lung window upper bound (HU)")
    hist_eq: bool = param(False, "histogram equalisation inside the lungs before the z-score")
    store_dtype: str = param("float32", "dtype of stored images", StoreDtype.values())
    test_cases: int = param(20, "size of the held-out test set (official split used if any)")
    folds: int = param(5, "number of cross-validation folds over the remaining labelled cases")
    strict: bool = param(False, "stop at the first bad case instead of recording it and going on")
    export_nnunet: str = param("", "also write the cohort as an nnU-Net v2 raw dataset into this "
                                   "folder, named DatasetNNN_Name: input images and reference "
                                   "masks on their original grid, the folds as "
                                   "splits_final.json, test and unlabelled cases in imagesTs")
    log_dataset_mb: float = param(500.0, "upload the preprocessed arrays as run artifacts when "
                                         "smaller than this (MB); the descriptor is always logged")
    demo_labelled: int = param(30, "demo: labelled COVID phantoms")
    demo_unlabelled: int = param(20, "demo: unlabelled COVID phantoms (other centres)")
    demo_noncovid: int = param(10, "demo: non-COVID (nodule) phantoms")
    demo_size: int = param(128, "demo: in-plane size in pixels")
    demo_depth: int = param(48, "demo: scanned length in mm")
    demo_difficulty: float = param(0.5, "demo: 0 (easy) .. 1 (faint ground-glass, more noise)")
    demo_display_fraction: float = param(0.0, "demo: share of labelled cases stored as 0-255 "
                                              "display values instead of HU")


def _arch():
    return param("unet", "architecture: an smp name (unet, unetplusplus, fpn, …), attention-unet "
                         "or genesis-unet")


def _encoder():
    return param("resnet34", "encoder (smp encoder name; weights never downloaded)")


def _encoder_weights():
    return param("", "local encoder weight file (state dict), e.g. ImageNet")


def _viewers(what: str):
    return param(3, f"{what} logged as a scrollable HTML slice viewer, viewers/CASE.html (CT, "
                    "truth and prediction overlays, the Dice of each slice; 0: none)")


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
    viewers: int = _viewers("test cases (the largest lesions) each")
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


@dataclass
class PseudolabelConfig(CommonConfig):
    model: str = param("", "fine-tuned run id or model URI")
    coarse_model: str = param("", "3D U-Net run id for the coarse boxes (default: lung mask box)")
    unlabelled: str = param("", "unlabelled data (default: the dataset's unlabelled cases)")
    patch_size: int = param(0, "patch side (pixels); 0: the thesis's 68 px per 512 px of the "
                               "slice side")
    labelled_patches: int = param(120, "patches sampled from labelled volumes")
    patches_per_volume: int = param(32, "patches per unlabelled volume")
    source: str = param("model", "how pseudo-labels are made: model = the network's own confident "
                                 "predictions on whole unlabelled slices (self-training); "
                                 "similarity = the thesis's patch matching; oracle = the "
                                 "unlabelled cases' true masks (phantoms only: the upper bound)",
                         PseudoSource.values())
    confidence: float = param(0.97, "model: keep a background pixel when 1-p is at least this "
                                    "(every predicted-lesion pixel is kept)", search=(0.6, 0.995))
    feature: str = param("gap-centred", "similarity: patch features — gap-raw (thesis: GAP of the "
                                        "deepest encoder map) or gap-centred (the same centred on "
                                        "the labelled dictionary's mean)",
                         ("gap-centred", "gap-raw"))
    band: str = param("quantile", "similarity: thresholds as absolute similarities (sim_low, "
                                  "sim_high, sim_min: the thesis) or the quantile of the observed "
                                  "ones (accept_fraction)", ("quantile", "absolute"))
    accept_fraction: float = param(0.2, "similarity, band=quantile: share of the unlabelled "
                                        "patches accepted (the most similar)",
                                   search=(0.02, 0.5))
    min_tissue: float = param(0.5, "similarity: least share of a patch's pixels on tissue (lungs, "
                                   "else body foreground)")
    rule: str = param("top1-band", "assignment rule", ("top1-band", "top2-weighted"))
    sim_low: float = param(0.87, "top1-band: lowest accepted similarity", search=(0.5, 0.97))
    sim_high: float = param(0.96, "top1-band: highest accepted similarity", search=(0.9, 1.0))
    sim_min: float = param(0.90, "top2-weighted: both similarities above this", search=(0.5, 0.99))


@dataclass
class MeanteacherConfig(SupervisedConfig):
    """The student *is* the fine-tuned model: no arch, encoder, init or strategy here."""

    model: str = param("", "fine-tuned run id or model URI (the student's start)")
    pseudo: str = param("", "pseudolabel run id (empty: consistency on unlabelled slices only)")
    unlabelled: str = param("", "unlabelled data for the consistency term (default: the pseudo "
                                "set's, else the dataset's unlabelled cases)")
    pseudo_weight: float = param(1.0, "weight of the pseudo-label loss", search=(0.1, 3.0, "log"))
    ema_alpha: float = param(0.99, "teacher EMA factor", search=(0.9, 0.999))
    consistency_weight: float = param(1.0, "weight of the consistency loss after ramp-up",
                                      search=(0.1, 10.0, "log"))
    rampup_epochs: int = param(0, "sigmoid ramp-up of the consistency weight (epochs; 0: the "
                                  "first third of the run)")
    method: str = param("meanteacher", "how the unlabelled slices teach: meanteacher (MSE between "
                                       "the student's strong view and the EMA teacher's weak "
                                       "view) or unimatch (the teacher's confident pixels as "
                                       "targets for two CutMix-ed strong views and a "
                                       "feature-perturbed weak view, CE + Dice)",
                        SemiMethod.values())
    target_confidence: float = param(0.95, "unimatch: a teacher pixel is a target when p >= "
                                           "this (lesion) or p <= 1 - this (background)",
                                     search=(0.7, 0.99), searched_by_default=False)


@dataclass
class CompareConfig(CommonConfig):
    runs: str = param("", "comma-separated run ids")
    mode: str = param("checkpoints", "analysis", ("checkpoints", "init-vs-final", "run-vs-run"))
    probe_slices: int = param(32, "slices in the fixed probe set (from the held-out test volumes)")
    max_points: int = param(4096, "spatial positions sampled per layer (bounds memory)")
    keep: float = param(0.99, "variance the SVD step keeps before CCA")


@dataclass
class TuneConfig(CommonConfig):
    target: str = param("finetune", "entry point to tune", ("finetune", "meanteacher"))
    n_trials: int = param(20, "trials for this worker")
    timeout: float = param(0.0, "seconds for this worker (0: no limit)")
    study_name: str = param("covidseg", "Optuna study name (re-using it resumes the study)")
    storage: str = param("", "Optuna storage URL (default: $COVIDSEG_OPTUNA_STORAGE, else an "
                             "SQLite file in the cache; postgresql://… to share a study between "
                             "machines — its password via PGPASSWORD/~/.pgpass or the variable, "
                             "never logged)")
    params: str = param("", "fixed parameters of every trial: key=value,key=value "
                            "(e.g. epochs=30,train_cases=4; meanteacher: model=RUN,pseudo=RUN)")
    search: str = param("", "comma-separated parameters to search (default: all the target's "
                            "searchable ones: lr; meanteacher adds ema_alpha, "
                            "consistency_weight, pseudo_weight and, without a fixed pseudo, the "
                            "pseudo-label threshold that acts: confidence)")
    warmup_epochs: int = param(3, "epochs before the median pruner may stop a trial")


@dataclass
class PredictConfig(CommonConfig):
    model: str = param("", "finetune/meanteacher run id, runs:/ or models:/ URI")
    input: str = param("", "CT volume file, DICOM series folder, or a folder of volumes")
    output: str = param("predictions", "output folder (masks and reports; also logged)")
    restrict_to_lungs: bool = param(True, "remove predicted lesion outside the lung mask")
    threshold: str = param("model", "probability threshold: model = the one stored with the model "
                                    "(0.5 unless finetune chose one), or a probability")
    probabilities: bool = param(False, "also write the lesion probability maps (NIfTI float32 on "
                                       "the input's grid; 8-bit PNG for slice images)")
    lungs: str = param("", "lung masks of the inputs (a folder or glob pattern, paired by file "
                           "name): needed by a model trained with lung_method=provided")
    prefetch: int = param(2, "inputs read and preprocessed ahead (threads) while the network "
                             "works on the current one (0: one after the other)")
    viewers: int = param(3, "the first inputs each written as a scrollable HTML slice viewer "
                            "next to its mask (CASE_viewer.html: CT and prediction; 0: none)")
    batch_size: int = param(16, "slices per forward pass")
    tta: str = param("model", "test-time mirroring (mean over each slice and its 3 in-plane "
                              "mirror images, 4× the network's work): model = as the model was "
                              "evaluated when trained, true, false", ("model", "true", "false"))


@dataclass
class EvaluateConfig(CommonConfig):
    model: str = param("", "finetune/meanteacher run id, runs:/ or models:/ URI")
    split: str = param("test", "which labelled cases: the held-out test set, or all labelled",
                       ("test", "labelled"))
    viewers: int = _viewers("cases (the largest lesions) each")
    threshold: str = param("model", "probability threshold: model = the one stored with the model, "
                                    "or a probability")
    batch_size: int = param(16, "slices per forward pass")
    tta: str = param("model", "test-time mirroring (mean over each slice and its 3 in-plane "
                              "mirror images): model = as the model was evaluated when trained, "
                              "true, false", ("model", "true", "false"))




def _finetune_default(name: str):
    """finetune's default of ``name``: grid and pipeline cells train with the same defaults."""
    return field_default(FinetuneConfig.__dataclass_fields__[name])


@dataclass
class GridConfig(CommonConfig):
    archs: str = param("unet,attention-unet", "comma-separated architectures")
    strategies: str = param("scratch,decoder,all", "comma-separated cells: scratch (init scratch, "
                                                   "strategy all) or a strategy from `pretrained`")
    regimes: str = param("10-40,40-10", "comma-separated regimes")
    folds: str = param("0,1,2,3,4", "comma-separated folds")
    inits: str = param("", "comma-separated inits of the non-scratch cells: restoration or "
                           "supervised (a pretrain run per architecture in that mode, made first; "
                           "supervised trains on the auxiliary non-COVID volumes), pretrained "
                           "(the `pretrained` runs), or a run id / model URI / Models Genesis "
                           "file (default: pretrained if given, else restoration)")
    pretrained: str = param("", "the init `pretrained`: a pretrain run per architecture as "
                                "arch=RUN,arch=RUN, or one run/file for all")
    pretrain_epochs: int = param(5, "epochs of those pretrain runs")
    encoder: str = param("resnet34", "encoder of every cell")
    recipe: str = param(_finetune_default("recipe"), "training recipe of every cell (finetune's)",
                        ("covidseg", "thesis"))
    epochs: int = param(_finetune_default("epochs"), "epochs of every cell (0: the plan's, as "
                                                     "finetune)")
    iterations_per_epoch: int = param(_finetune_default("iterations_per_epoch"),
                                      "optimiser steps per epoch of every cell (0: the plan's)")
    patience: int = param(_finetune_default("patience"), "early stop of every cell (0: never; "
                                                         "-1: the recipe's)")
    lr: float = param(_finetune_default("lr"), "peak learning rate of every cell (0: the "
                                               "recipe's)")
    batch_size: int = param(_finetune_default("batch_size"), "slices per batch")
    workers: int = param(-1, "DataLoader workers (-1: from the CPU count)")
    storage: str = param("", "database where workers on several machines share the grid's cells "
                             "(postgresql://user@host/db, or sqlite:///file on one machine; its "
                             "password via PGPASSWORD/~/.pgpass or the whole URL in "
                             "$COVIDSEG_GRID_STORAGE, never logged); empty: "
                             "$COVIDSEG_GRID_STORAGE, else the cells one after another here")
    grid_name: str = param("", "the shared grid workers join (default: named after the grid's "
                               "parameters, so the same command on several machines joins one "
                               "grid)")


PIPELINE_STAGES = ("preprocess", "pretrain", "finetune", "pseudolabel", "meanteacher", "compare")
# parameters the pipeline wires from one stage's run to the next (not user-facing there)
PIPELINE_WIRED = {"init", "model", "pseudo", "runs", "resume", "experiment"}
# the pipeline's own parameters (not any one stage's)
PIPELINE_OWN = [
    ("init", "str", param("", "finetune's starting point: empty = the pretrain stage's network "
                            "(restoration); scratch (no pretrain stage); or a pretrain/finetune "
                            "run id or model URI, or a Models Genesis checkpoint file (the "
                            "pretrain stage is skipped)")),
]
# what the chain does differently from each stage's own entry point: a short pretrain, no
# intermediate checkpoints, the mean teacher's shorter run (finetune keeps its own defaults: the
# plan's iterations and the default recipe)
PIPELINE_DEFAULTS = {"pretrain_epochs": 5, "pretrain_image_size": 96,
                     "meanteacher_epochs": 20, "meanteacher_patience": 10, "meanteacher_lr": 2e-4,
                     "meanteacher_lesion_boost": 3.0, "rampup_epochs": 6,
                     "compare_mode": "init-vs-final", "pretrain_checkpoint_every": 0,
                     "finetune_checkpoint_every": 0, "meanteacher_checkpoint_every": 0}
# meanteacher's own: its epochs and patience count epochs of the plan's iterations


def _pipeline_config():
    """PipelineConfig: the union of its stages' parameters, a name shared by several stages
    prefixed with the stage (``finetune_lr``), the wired ones left out — built from the stage
    dataclasses so that nothing is declared twice."""
    from dataclasses import make_dataclass

    stage_fields = {name: [f for f in fields(STAGE_CONFIGS[name])
                           if f.name not in PIPELINE_WIRED | _COMMON]
                    for name in PIPELINE_STAGES}
    counts: dict[str, int] = {}
    for fs in stage_fields.values():
        for f in fs:
            counts[f.name] = counts.get(f.name, 0) + 1
    spec, seen = [], set()
    for stage, fs in stage_fields.items():
        for f in fs:
            name = f"{stage}_{f.name}" if counts[f.name] > 1 else f.name
            if name in seen:
                continue
            seen.add(name)
            default = PIPELINE_DEFAULTS.get(name, field_default(f))
            help_text = f.metadata.get("help", "")
            spec.append((name, f.type, param(default, f"{stage}: {help_text}",
                                             f.metadata.get("choices"))))
    spec = PIPELINE_OWN + spec
    cls = make_dataclass("PipelineConfig", spec, bases=(CommonConfig,))
    cls.__doc__ = "preprocess → pretrain → finetune → pseudolabel → meanteacher → compare"
    cls.stage_fields = {k: [f.name for f in v] for k, v in stage_fields.items()}
    cls.prefixed = {n for n, c in counts.items() if c > 1}
    return cls


CONFIGS: dict[str, type[CommonConfig]] = {
    "preprocess": PreprocessConfig,
    "pretrain": PretrainConfig,
    "finetune": FinetuneConfig,
    "pseudolabel": PseudolabelConfig,
    "meanteacher": MeanteacherConfig,
    "compare": CompareConfig,
    "tune": TuneConfig,
    "predict": PredictConfig,
    "evaluate": EvaluateConfig,
    "grid": GridConfig,
}
STAGE_CONFIGS = dict(CONFIGS)
_COMMON = {f.name for f in fields(CommonConfig)}


def parse_value(f, raw: str):
    """Convert a command-line / MLflow string to the field's type."""
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind == "bool":
            low = str(raw).strip().lower()
            if low in ("true", "1", "yes", "y", "on"):
                return True
            if low in ("false", "0", "no", "n", "off", ""):
                return False
            raise ValueError(raw)
        if kind == "int":
            as_float = float(raw)
            if as_float != int(as_float):
                raise ValueError(raw)
            return int(as_float)
        if kind == "float":
            return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{f.name}={raw!r} is not a valid {kind}") from exc
    return str(raw)




PipelineConfig = _pipeline_config()
CONFIGS = {**{k: v for k, v in CONFIGS.items() if k != "grid"}, "pipeline": PipelineConfig,
           "grid": GridConfig}
