"""The life of a run: :func:`start_run` opens (or, under ``mlflow run``, attaches to) the run of
one entry-point invocation, records every parameter, the package version and git commit, and
ends it FINISHED / FAILED / KILLED; :func:`child_run` nests a stage's run under it.  Every run
gets the same name scheme and identity tags whichever door started it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import warnings
from pathlib import Path

from covidseg import __version__
from covidseg.base.errors import ConfigError, TrackingUnavailable, first_line
from covidseg.base.redact import redact
from covidseg.tracking.base import NullTracker
from covidseg.tracking.client import connect, server_lost, tracking_uri
from covidseg.tracking.heartbeat import heartbeat, start_beating, stop_beating, tidy_runs
from covidseg.tracking.mlflow_tracker import MlflowTracker
from covidseg.tracking.tags import Tag

EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")

# where an entry point's database URL (with its password) may come from instead of a parameter
STORAGE_VARIABLES = {"tune": "COVIDSEG_OPTUNA_STORAGE", "grid": "COVIDSEG_GRID_STORAGE"}


def git_commit() -> str | None:
    """Commit of the source tree the package runs from (with ``-dirty`` when modified)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (sha + ("-dirty" if dirty else "")) if sha else None


def run_name(entry_point: str) -> str:
    """One naming scheme for every door (covidseg NAME, python entrypoints/NAME.py, mlflow run,
    nested stages): ``<entry point>-<YYYYmmdd-HHMMSS>``."""
    return f"{entry_point}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_identity(entry_point: str, existing: dict, renamed: bool = True,
                 fresh: bool = True) -> dict:
    """Tags every covidseg run carries whatever started it: its name (``mlflow run`` picks a
    random one), the git commit (``mlflow run`` sets ``mlflow.source.git.commit`` itself, the
    other doors did not) and the user: the server login when there is one (MLflow itself tags
    the machine's user name, ``root`` for everyone in a container), else the machine's (a
    client-created nested run has none)."""
    import getpass

    tags = {}
    if renamed:
        tags["mlflow.runName"] = run_name(entry_point)
    commit = git_commit()
    if commit:
        tags[Tag.GIT_COMMIT] = commit
        if "mlflow.source.git.commit" not in existing:
            tags["mlflow.source.git.commit"] = commit.removesuffix("-dirty")
    login = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if fresh and login and existing.get("mlflow.user") != login:  # a resumed run keeps its user
        tags["mlflow.user"] = login  # on a login server the login ran it (MLflow tags the OS user)
    elif "mlflow.user" not in existing:
        with contextlib.suppress(Exception):
            tags["mlflow.user"] = getpass.getuser()
    return tags


def system_metrics_enabled() -> bool:
    """MLflow's system metrics (CPU, memory, GPU) while a run is open: when psutil is there and
    ``COVIDSEG_SYSTEM_METRICS`` is not 0."""
    import importlib.util

    return os.environ.get("COVIDSEG_SYSTEM_METRICS", "1") != "0" and \
        importlib.util.find_spec("psutil") is not None


def mark_training_experiment(client, experiment_id: str) -> None:
    """Tag an experiment covidseg writes to as model training, so that MLflow's UI opens it on
    the training runs' table (an experiment made by ``mlflow run --experiment-name`` would open in
    the GenAI view otherwise)."""
    exp = client.get_experiment(experiment_id)
    if exp.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
        with contextlib.suppress(Exception):  # e.g. a read-only user: not worth failing a run
            client.set_experiment_tag(experiment_id, *EXPERIMENT_KIND)


def _error_tag(exc: BaseException) -> dict:
    return {Tag.ERROR: " ".join(str(exc).split())[:1000]}


@contextlib.contextmanager
def start_run(entry_point: str, params: dict[str, str], experiment: str = "",
              enabled: bool = True, run_id: str | None = None, recipe_filled: dict | None = None):
    """Open the run of one entry-point invocation in ``experiment`` (default: the entry point's
    name), log its ``params`` and what a recipe filled in (as ``recipe_<name>``); yield its tracker.
    Under ``mlflow run`` the run already exists (``MLFLOW_RUN_ID``) and is reused; ``run_id``
    re-opens a given run (``resume``).  ``enabled=False`` yields a :class:`NullTracker`."""
    if not enabled:
        yield NullTracker()
        return
    connect()
    import mlflow

    env_run = os.environ.get("MLFLOW_RUN_ID")
    experiment = experiment or entry_point
    if run_id and env_run and env_run != run_id:
        # `mlflow run -P resume=ID` opened a fresh run: point it at the run that continues
        from mlflow.tracking import MlflowClient

        MlflowClient().set_tag(env_run, Tag.CONTINUED_IN.value, run_id)
    system = system_metrics_enabled()
    if run_id or env_run:
        if run_id:  # resuming: beat first, so that no tidy fails the run as it reopens
            start_beating(run_id)
        try:
            active = mlflow.start_run(run_id=run_id or env_run, log_system_metrics=system)
        except BaseException:
            stop_beating(run_id or env_run)
            raise
    else:
        try:
            mlflow.set_experiment(experiment)
        except Exception as exc:  # e.g. a deleted experiment of that name
            raise ConfigError(f"experiment={experiment!r}: {first_line(exc)}") from exc
        try:
            active = mlflow.start_run(run_name=run_name(entry_point), log_system_metrics=system)
        except Exception as exc:  # a 403: one line saying who lacks what, and who grants it
            from covidseg.tracking.members import permission_denied

            denied = permission_denied(exc, "create runs", experiment)
            if denied is None:
                raise
            raise denied from exc
    tracker = MlflowTracker(active.info.run_id)
    tags = {Tag.ENTRY_POINT: entry_point, Tag.VERSION: __version__,
            **run_identity(entry_point, active.data.tags, renamed=bool(env_run and not run_id),
                         fresh=not run_id)}
    status = "FAILED"
    try:
        start_beating(tracker.run_id)
        with contextlib.suppress(Exception):  # runs of this experiment whose process died
            tidy_runs([active.info.experiment_id], exclude=tracker.run_id)
        mark_training_experiment(tracker.client, active.info.experiment_id)
        tracker.set_tags(tags)
        if not run_id:
            # `mlflow run` has logged the MLproject parameters already (empty ones as "''"):
            # add only what it did not, since MLflow refuses to change a logged value
            logged = tracker.client.get_run(tracker.run_id).data.params if env_run else {}
            leaked = sorted(k for k, v in logged.items() if redact(v) != v)
            if leaked:  # `mlflow run` logged the -P values before covidseg ran: too late to redact
                raise leaked_secret(tracker, leaked, entry_point)
            tracker.log_params({k: v for k, v in params.items() if k not in logged})
            # the values a recipe gave the parameters left at "the recipe's" (which `mlflow run`
            # has logged as given: '' / -1 / 0): what ran, whichever door started the run
            tracker.log_params({f"recipe_{k}": str(v) for k, v in (recipe_filled or {}).items()})
        yield tracker
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except Exception as exc:
        if server_lost(exc):
            # gone, not restarting, and this process is ending: its closing call (end the run)
            # fails at once instead of retrying for a minute
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
            raise TrackingUnavailable(
                f"the MLflow tracking server {tracking_uri()} stopped answering during run "
                f"{tracker.run_id}; the training state stays in this machine's cache — restart "
                f"the server and continue with resume={tracker.run_id}") from exc
        with contextlib.suppress(Exception):
            tracker.set_tags(_error_tag(exc))
        raise
    finally:
        stop_beating(tracker.run_id)
        with contextlib.suppress(Exception):
            mlflow.end_run(status=status)


def leaked_secret(tracker, leaked: list[str], entry_point: str) -> ConfigError:
    """``mlflow run`` logged a password as a parameter before covidseg ran: the run deletes
    itself (members can no longer list it) and the error gives the admin's ``mlflow gc`` that
    erases it from the database — a deleted run's parameters stay there until then."""
    with contextlib.suppress(Exception):
        tracker.set_tags({Tag.ERROR: f"{', '.join(leaked)} held a password: run deleted"})
    deleted = False
    with contextlib.suppress(Exception):
        tracker.client.set_terminated(tracker.run_id, "FAILED")
        tracker.client.delete_run(tracker.run_id)
        deleted = True
    done = ("covidseg deleted that run; the server's admin erases it for good with `mlflow gc "
            f"--backend-store-uri <the server's database> --run-ids {tracker.run_id}`"
            if deleted else f"delete run {tracker.run_id} and have the admin run `mlflow gc`")
    return ConfigError(
        f"{', '.join(leaked)} holds a password, and `mlflow run` logged it as a parameter of run "
        f"{tracker.run_id}: {done}. Give the URL without it (PGPASSWORD / ~/.pgpass) or through "
        f"{STORAGE_VARIABLES.get(entry_point, 'COVIDSEG_OPTUNA_STORAGE')}")


@contextlib.contextmanager
def child_run(parent, name: str, entry_point: str, params: dict[str, str] | None = None,
              tags: dict | None = None):
    """A run nested under ``parent`` (tag ``mlflow.parentRunId`` set explicitly), in the parent's
    experiment, with ``params`` logged; yields its tracker and ends it FINISHED, or KILLED for an
    exception whose ``run_status`` says so (a pruned trial), else FAILED."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    experiment_id = client.get_run(parent.run_id).info.experiment_id
    all_tags = {"mlflow.parentRunId": parent.run_id, Tag.ENTRY_POINT: entry_point,
                Tag.VERSION: __version__,
                **run_identity(entry_point, {}, renamed=False), **(tags or {})}
    run = client.create_run(experiment_id, run_name=name,
                            tags={str(k): v for k, v in all_tags.items()})
    tracker = MlflowTracker(run.info.run_id)
    if params:
        tracker.log_params(params)
    try:
        with heartbeat(tracker.run_id):
            yield tracker
    except BaseException as exc:
        status = getattr(exc, "run_status", "FAILED")
        with contextlib.suppress(Exception):
            tracker.set_tags(_error_tag(exc))
            client.set_terminated(tracker.run_id, status)
        raise
    client.set_terminated(tracker.run_id, "FINISHED")


def run_metrics(run_id: str) -> dict[str, float]:
    """The latest value of every metric of a run."""
    from mlflow.tracking import MlflowClient

    return MlflowClient().get_run(run_id).data.metrics


def quiet_mlflow_warnings() -> None:
    """MLflow's own deprecation chatter is not for our users' terminals."""
    warnings.filterwarnings("ignore", module=r"mlflow\..*", category=FutureWarning)
