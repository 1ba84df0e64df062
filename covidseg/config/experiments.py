"""The parameters of the stages that run or compare other runs: ``compare`` (SVCCA),
``tune`` (Optuna) and ``grid`` (the thesis's grid of fine-tunings)."""

from __future__ import annotations

from dataclasses import dataclass

from covidseg.config.params import CommonConfig, field_default, param
from covidseg.config.training import FinetuneConfig


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
