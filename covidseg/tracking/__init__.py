"""The only package that talks to MLflow.

==================  ==============================================================================
``base``            the :class:`Tracker` protocol a stage logs through, and :class:`NullTracker`
                    (tracking off: the library runs without a server)
``mlflow_tracker``  :class:`MlflowTracker`, the protocol for one MLflow run
``tags``            :class:`Tag`: every ``covidseg.*`` run tag name, lineage included
``runs``            :func:`start_run` / :func:`child_run`: open, name, identify and end runs
``refs``            run ids, ``runs:/`` and ``models:/`` URIs → runs and cached local files
``client``          where the tracking server is, and whether it answers (fails fast)
``heartbeat``       a heartbeat on every open run; :func:`tidy_runs` fails the silent ones
``members``         the group server's members (``covidseg add-member``), 403s as one line
``logged_model``    requirements and signature of a logged model
``pyfunc``          the MLflow model class and its bad-input error (MLflow loads it through
                    ``covidseg/serving/pyfunc_model.py``, "models from code"; we do not)
``local_server``    the ``mlflow server`` command line and a throw-away server for the tests and
                    benchmarks (not imported here: off the runtime path)
==================  ==============================================================================

MLflow itself is imported inside the functions that use it, so importing this package (for
:class:`NullTracker`, say) stays cheap.
"""

from covidseg.tracking.base import NullTracker, Tracker
from covidseg.tracking.client import check_server, tracking_uri
from covidseg.tracking.heartbeat import fail_abandoned_run
from covidseg.tracking.mlflow_tracker import MlflowTracker, rows_to_csv
from covidseg.tracking.refs import (
    RUN_ID_RE,
    download_model,
    download_run_artifacts,
    is_run_ref,
    list_run_artifacts,
    resolve_run_ref,
    run_info,
)
from covidseg.tracking.runs import (
    EXPERIMENT_KIND,
    STORAGE_VARIABLES,
    child_run,
    git_commit,
    quiet_mlflow_warnings,
    run_identity,
    run_metrics,
    run_name,
    start_run,
)
from covidseg.tracking.tags import TAG_PREFIX, Tag

__all__ = [
    "EXPERIMENT_KIND", "RUN_ID_RE", "STORAGE_VARIABLES", "TAG_PREFIX", "MlflowTracker",
    "NullTracker", "Tag", "Tracker", "check_server", "child_run", "download_model",
    "download_run_artifacts", "fail_abandoned_run", "git_commit", "is_run_ref",
    "list_run_artifacts", "quiet_mlflow_warnings", "resolve_run_ref", "rows_to_csv",
    "run_identity", "run_info", "run_metrics", "run_name", "start_run", "tracking_uri",
]
