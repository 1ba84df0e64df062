"""The semi-supervised stages' parameters: ``pseudolabel`` and ``meanteacher``."""

from __future__ import annotations

from dataclasses import dataclass

from covidseg.config.params import CommonConfig, param
from covidseg.config.training import SupervisedConfig
from covidseg.semi.vocabulary import PseudoSource, SemiMethod


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
