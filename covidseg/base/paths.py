"""Where covidseg keeps its files on this machine: one leaf module, read from the environment.

``$COVIDSEG_CACHE`` (default ``~/.cache/covidseg``) holds everything covidseg makes or fetches
that can be made or fetched again::

    demo/<key>/            generated phantom cohorts
    preprocessed/<key>/    preprocessed datasets (content-keyed, see covidseg.data.store)
    runs/<run id>/         artifacts downloaded from a tracking server
    models/<model id>/     logged models downloaded from a tracking server
    training/<run>/        a training run's resume state
    optuna/                the default Optuna study database

Nothing here imports another covidseg module, so every layer may ask it for a folder.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_VARIABLE = "COVIDSEG_CACHE"


def cache_root() -> Path:
    """Where covidseg keeps demo cohorts, preprocessed datasets and downloaded artifacts."""
    root = os.environ.get(CACHE_VARIABLE) or os.path.join(os.path.expanduser("~"), ".cache",
                                                          "covidseg")
    return Path(root)


def downloaded_run_dir(run_id: str) -> Path:
    """The local copy of a tracking-server run's artifacts."""
    return cache_root() / "runs" / run_id


def downloaded_model_dir(key: str) -> Path:
    """The local copy of a logged model (``key``: its model id, or its URI made a file name)."""
    return cache_root() / "models" / key
