"""Typed configuration: one dataclass per entry point, declared once.

The same dataclass feeds the command line (``covidseg NAME --key value`` and
``python entrypoints/NAME.py --key value``), the MLproject parameters (rendered from these
classes, see :func:`covidseg.cli.render_mlproject`) and later Optuna's search space.  Defaults are
the thesis's.  Optional text parameters use ``""`` for "not given" (MLproject needs a default).

Allowed values belong to the layer that uses them: the data layer's (layouts, tasks, intensity
schemes, lung methods, …) come from :mod:`covidseg.data.vocabulary`.  The layers below the stages
are handed their own settings objects, built from these by the stage (for data:
:func:`covidseg.stages.preprocess.preprocess_settings` and its siblings), never a config.

One module per family of entry points — :mod:`~covidseg.config.params` (the declaration and
the shared options), :mod:`~covidseg.config.preprocess`, :mod:`~covidseg.config.training`
(pretrain, finetune, the recipes), :mod:`~covidseg.config.semi` (pseudolabel, meanteacher),
:mod:`~covidseg.config.prediction` (predict, evaluate), :mod:`~covidseg.config.experiments`
(compare, tune, grid), :mod:`~covidseg.config.pipeline` (pipeline, :data:`CONFIGS`) — all
importable from here.  Nothing here imports torch: the command line reads it before any run.
"""

from covidseg.config.experiments import CompareConfig, GridConfig, TuneConfig
from covidseg.config.params import (
    CommonConfig,
    field_default,
    param,
    parse_value,
    threshold_value,
    tta_value,
)
from covidseg.config.pipeline import (
    CONFIGS,
    PIPELINE_DEFAULTS,
    PIPELINE_OWN,
    PIPELINE_STAGES,
    PIPELINE_WIRED,
    STAGE_CONFIGS,
    PipelineConfig,
)
from covidseg.config.prediction import EvaluateConfig, PredictConfig
from covidseg.config.preprocess import PreprocessConfig
from covidseg.config.semi import MeanteacherConfig, PseudolabelConfig
from covidseg.config.training import (
    RECIPE_AUTO,
    RECIPES,
    FinetuneConfig,
    PretrainConfig,
    SupervisedConfig,
    TrainingConfig,
    apply_recipe,
)

__all__ = [
    "CONFIGS", "PIPELINE_DEFAULTS", "PIPELINE_OWN", "PIPELINE_STAGES", "PIPELINE_WIRED",
    "RECIPES", "RECIPE_AUTO", "STAGE_CONFIGS", "CommonConfig", "CompareConfig", "EvaluateConfig",
    "FinetuneConfig", "GridConfig", "MeanteacherConfig", "PipelineConfig", "PredictConfig",
    "PreprocessConfig", "PretrainConfig", "PseudolabelConfig", "SupervisedConfig",
    "TrainingConfig", "TuneConfig", "apply_recipe", "field_default", "param", "parse_value",
    "threshold_value", "tta_value",
]
