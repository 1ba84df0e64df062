"""The names of the tags covidseg sets on its MLflow runs: one vocabulary, declared once.

Every name starts with ``covidseg.``; MLflow's own tags (``mlflow.runName``,
``mlflow.parentRunId``, …) keep MLflow's names.  A :class:`Tag` is a ``str``: it compares equal
to its name, formats as it, and works as a key of ``run.data.tags``.  Two families carry a
suffix: ``covidseg.source.<role>`` (the run a run used as its ``role`` input — lineage, see
:meth:`Tag.source`) and ``covidseg.stage.<name>`` (the run a pipeline ran as stage ``name``).
"""

from __future__ import annotations

from enum import Enum

TAG_PREFIX = "covidseg."


class Tag(str, Enum):
    """A covidseg run tag (``enum.StrEnum`` from Python 3.11 on; this also runs on 3.10)."""

    # who made the run, and how it ended
    ENTRY_POINT = "covidseg.entry_point"
    VERSION = "covidseg.version"
    GIT_COMMIT = "covidseg.git_commit"
    ERROR = "covidseg.error"
    CONTINUED_IN = "covidseg.continued_in"  # a run `mlflow run -P resume=ID` opened in vain
    STOP_REASON = "covidseg.stop_reason"
    HEARTBEAT = "covidseg.heartbeat"  # unix seconds, set every minute while the run is open
    HEARTBEAT_S = "covidseg.heartbeat_s"  # the interval of those beats
    # lineage: the runs this run used, and the model it logged
    SOURCE = "covidseg.source."  # + role (data, init, model, pseudo, …): Tag.source(role)
    SOURCES = "covidseg.sources"  # every source run, comma-separated
    MODEL_URI = "covidseg.model_uri"
    REGISTERED = "covidseg.registered"
    ALIAS = "covidseg.alias"
    # the preprocessed data
    DATASET_KEY = "covidseg.dataset_key"
    DATASET_RUN = "covidseg.dataset_run"  # the run holding the uploaded dataset
    DATASET_UPLOADED = "covidseg.dataset_uploaded"
    DATASET_PATH = "covidseg.dataset_path"
    CACHE_HIT = "covidseg.cache_hit"
    LAYOUT = "covidseg.layout"
    UNLABELLED_DATASET = "covidseg.unlabelled_dataset"
    # the network a training run built
    ARCH = "covidseg.arch"
    ENCODER = "covidseg.encoder"
    DEVICE = "covidseg.device"
    FROZEN = "covidseg.frozen"
    BEST_NETWORK = "covidseg.best_network"
    EVAL_GRID = "covidseg.eval_grid"
    PREPROCESSING_DIFFERS = "covidseg.preprocessing_differs"
    # pseudo-labels
    PSEUDO_SOURCE = "covidseg.pseudo_source"
    SEMI_METHOD = "covidseg.semi_method"
    ORACLE = "covidseg.oracle"
    COARSE = "covidseg.coarse"
    # grid
    GRID = "covidseg.grid"
    GRID_STORAGE = "covidseg.grid_storage"
    GRID_KEY = "covidseg.grid_key"  # hash of a finetune cell's configuration: reuse key
    GRID_INIT = "covidseg.grid_init"
    GRID_CELL = "covidseg.grid_cell"
    # tune
    STUDY = "covidseg.study"
    TRIAL = "covidseg.trial"  # a trial's number in its study
    STORAGE = "covidseg.storage"
    TRIAL_STATE = "covidseg.trial_state"
    BEST_TRIAL_RUN = "covidseg.best_trial_run"
    # cross-validation (finetune cv=K)
    CV_FOLD = "covidseg.cv_fold"  # the fold a nested fold run trained without
    ENSEMBLE_OF = "covidseg.ensemble_of"  # the fold runs whose models the ensemble averages
    # pipeline
    PIPELINE_STAGE = "covidseg.pipeline_stage"
    STAGE = "covidseg.stage."  # + stage name: Tag.stage(name)

    def __str__(self) -> str:  # the name, as StrEnum does (format() follows on 3.12+)
        return self.value

    @classmethod
    def source(cls, role: str) -> str:
        """``covidseg.source.<role>``: the run this run used as its ``role`` input."""
        return f"{cls.SOURCE.value}{role}"

    @classmethod
    def stage(cls, name: str) -> str:
        """``covidseg.stage.<name>``: the run a pipeline ran as its stage ``name``."""
        return f"{cls.STAGE.value}{name}"
