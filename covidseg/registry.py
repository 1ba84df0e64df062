"""Which function runs each entry point: one table for the command line, ``mlflow run`` (through
``entrypoints/NAME.py``) and the stages that run other entry points nested (pipeline, grid).

Each runner takes ``(config, tracker)`` and returns a summary dict.  The modules are imported
only when their entry point runs (``--help`` and ``covidseg mlproject`` stay fast).
"""

from __future__ import annotations

import importlib

RUNNERS: dict[str, str] = {
    "preprocess": "covidseg.preprocessing:preprocess_dataset",
    "pretrain": "covidseg.train.pretrain:pretrain",
    "finetune": "covidseg.train.finetune:finetune",
    "pseudolabel": "covidseg.semi.pseudolabel:pseudolabel",
    "meanteacher": "covidseg.semi.meanteacher:meanteacher",
    "compare": "covidseg.analysis.compare:compare",
    "tune": "covidseg.tuning:tune",
    "predict": "covidseg.predict:predict_entry",
    "evaluate": "covidseg.predict:evaluate_entry",
    "pipeline": "covidseg.pipeline:pipeline",
    "grid": "covidseg.grid:grid",
}


def runner(name: str):
    """The function that runs entry point ``name`` (imported now)."""
    module, func = RUNNERS[name].split(":")
    return getattr(importlib.import_module(module), func)
