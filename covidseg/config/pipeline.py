"""``pipeline``'s parameters, built from its stages' configs (nothing declared twice), and
:data:`CONFIGS`: every entry point's config by name."""

from __future__ import annotations

from dataclasses import fields

from covidseg.config.experiments import CompareConfig, GridConfig, TuneConfig
from covidseg.config.params import CommonConfig, field_default, param
from covidseg.config.prediction import EvaluateConfig, PredictConfig
from covidseg.config.preprocess import PreprocessConfig
from covidseg.config.semi import MeanteacherConfig, PseudolabelConfig
from covidseg.config.training import FinetuneConfig, PretrainConfig

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


# the entry points whose parameters the pipeline's are made of (and grid, and tune's targets)
STAGE_CONFIGS: dict[str, type[CommonConfig]] = {
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
_COMMON = {f.name for f in fields(CommonConfig)}
PipelineConfig = _pipeline_config()
# every entry point's config by name, in the order the reference and MLproject list them
CONFIGS: dict[str, type[CommonConfig]] = {
    **{k: v for k, v in STAGE_CONFIGS.items() if k != "grid"}, "pipeline": PipelineConfig,
    "grid": GridConfig}
