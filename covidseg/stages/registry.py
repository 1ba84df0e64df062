"""Which function runs each entry point: one table for the command line, ``mlflow run`` (through
``entrypoints/NAME.py``) and the stages that run other entry points nested (pipeline, grid).

Each runner takes ``(config, tracker)`` and returns its result: a
:class:`covidseg.stages.results.StageResult` (finetune, pseudolabel, meanteacher, compare,
pipeline, predict, evaluate) or a summary dict (preprocess, pretrain, tune, grid); the command
line prints its ``summary_of``.  The modules are imported
only when their entry point runs (``--help`` and ``covidseg mlproject`` stay fast).
"""

from __future__ import annotations

import importlib

RUNNERS: dict[str, str] = {
    "preprocess": "covidseg.stages.preprocess:preprocess_dataset",
    "pretrain": "covidseg.stages.pretrain:pretrain",
    "finetune": "covidseg.stages.finetune:finetune",
    "pseudolabel": "covidseg.stages.pseudolabel:pseudolabel",
    "meanteacher": "covidseg.stages.meanteacher:meanteacher",
    "compare": "covidseg.stages.compare:compare",
    "tune": "covidseg.stages.tune:tune",
    "predict": "covidseg.stages.predict:predict_entry",
    "evaluate": "covidseg.stages.predict:evaluate_entry",
    "pipeline": "covidseg.stages.pipeline:pipeline",
    "grid": "covidseg.stages.grid:grid",
}


# What an entry point checks of its inputs before any run or experiment exists: a wrong folder is
# one line, not a FAILED run in a new experiment.  Each takes the config and raises ConfigError.
CHECKS: dict[str, str] = {
    "preprocess": "covidseg.stages.preprocess:check_inputs",
    "predict": "covidseg.stages.predict:check_inputs",
}


def runner(name: str):
    """The function that runs entry point ``name`` (imported now)."""
    module, func = RUNNERS[name].split(":")
    return getattr(importlib.import_module(module), func)


def input_check(name: str):
    """Entry point ``name``'s input check (:data:`CHECKS`, imported now), or None."""
    if name not in CHECKS:
        return None
    module, func = CHECKS[name].split(":")
    return getattr(importlib.import_module(module), func)
