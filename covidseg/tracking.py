"""The only module that talks to MLflow.

* :func:`start_run` opens (or, under ``mlflow run``, attaches to) a run, records every parameter,
  the package version and git commit, and ends the run FINISHED / FAILED / KILLED.
* :class:`MlflowTracker` logs metrics, figures, tables and artifacts of that run;
  :class:`NullTracker` is the no-op stand-in with which the library runs without a server.
* :func:`resolve_run_ref` / :func:`download_run_artifacts` turn a run id, ``runs:/<id>/path`` or
  ``models:/name/version`` into local files; lineage tags record which runs a run used.

A remote tracking server is checked with a short ``/health`` request before any work starts, and
MLflow's HTTP retries are bounded, so a server that is down fails fast with one clear line.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import re
import subprocess
import time
import warnings
from pathlib import Path

from covidseg import __version__
from covidseg.errors import ConfigError, TrackingUnavailable, first_line
from covidseg.redact import redact

log = logging.getLogger("covidseg.tracking")

RUN_ID_RE = re.compile(r"^[0-9a-f]{32}$")
TAG_PREFIX = "covidseg."


def _configure_http() -> None:
    # MLflow retries a dead server for minutes by default; a user should learn at once.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")


def tracking_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()


def check_server(uri: str | None = None, timeout: float = 5.0) -> None:
    """Raise :class:`TrackingUnavailable` when an http(s) tracking server does not answer."""
    uri = uri or tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        r = requests.get(uri.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException as exc:
        raise TrackingUnavailable(f"MLflow tracking server {uri} is not reachable "
                                  f"({type(exc).__name__}); start it or fix MLFLOW_TRACKING_URI") from exc
    if r.status_code != 200:
        raise TrackingUnavailable(f"MLflow tracking server {uri} answered /health with HTTP "
                                  f"{r.status_code}; check the server (and --allowed-hosts)")
    # a login-protected server: are this client's credentials accepted? (one line, at once)
    user, token = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_TOKEN")
    auth = (user, os.environ.get("MLFLOW_TRACKING_PASSWORD", "")) if user else None
    headers = {"Authorization": f"Bearer {token}"} if token and not user else {}
    try:
        r = requests.get(uri.rstrip("/") + "/api/2.0/mlflow/experiments/search",
                         params={"max_results": 1}, auth=auth, headers=headers, timeout=timeout)
    except requests.RequestException:
        return  # /health answered: let the run's own requests report anything else
    if r.status_code == 401:
        raise TrackingUnavailable(
            f"MLflow tracking server {uri} requires a login and refused "
            + (f"user {user!r} (wrong password?)" if user else "an anonymous client")
            + ": set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)")


def git_commit() -> str | None:
    """Commit of the source tree the package runs from (with ``-dirty`` when modified)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (sha + ("-dirty" if dirty else "")) if sha else None


class NullTracker:
    """Tracking switched off: every call is a no-op.  The library runs with it by default."""

    run_id: str | None = None
    enabled = False

    def log_params(self, params: dict) -> None: ...
    def log_metrics(self, metrics: dict, step: int | None = None) -> None: ...
    def set_tags(self, tags: dict) -> None: ...
    def log_figure(self, fig, artifact_file: str) -> None:
        import matplotlib.pyplot as plt

        plt.close(fig)

    def figure(self, artifact_file: str, fn, *args, **kwargs) -> None:
        """Draw ``fn(*args, **kwargs)`` and log it; a figure that cannot be drawn or uploaded is
        skipped with a warning — it never fails the run."""
        from covidseg.data.figures import build

        fig = build(artifact_file, fn, *args, **kwargs)
        if fig is None:
            return
        try:
            self.log_figure(fig, artifact_file)
        except Exception as exc:  # noqa: BLE001
            log.warning("figure %s not logged: %s", artifact_file, first_line(exc, 200))

    def log_dict(self, obj, artifact_file: str) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_table(self, rows: list[dict], artifact_file: str) -> None: ...
    def log_artifact(self, local_path, artifact_path: str | None = None) -> None: ...
    def log_artifacts(self, local_dir, artifact_path: str | None = None) -> None: ...

    def link_source(self, role: str, run_id: str | None) -> None: ...
    def log_dataset_input(self, name: str, digest: str, source: dict, profile: dict,
                          context: str = "training") -> None: ...

    def find_run(self, tags: dict) -> str | None:
        return None

    def last_step(self, key: str) -> int:
        return -1

    def log_model(self, model_dir, name: str = "model", register_as: str = "",
                  alias: str = "", metrics: dict | None = None) -> str | None:
        return None


def np_isfinite(v) -> bool:
    import math

    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def rows_to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


class MlflowTracker(NullTracker):
    """Logs to one MLflow run through an explicit client (safe from any thread)."""

    enabled = True

    def __init__(self, run_id: str):
        from mlflow.tracking import MlflowClient

        self.run_id = run_id
        self.client = MlflowClient()
        self._sources: dict[str, str] = {}

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, redact(str(v))[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(step or 0)) for k, v in metrics.items()
                 if v is not None]
        for i in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[i:i + 500])

    def set_tags(self, tags: dict) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, redact(str(v))[:5000])
                                                 for k, v in tags.items()])

    def log_figure(self, fig, artifact_file: str) -> None:
        import matplotlib.pyplot as plt

        try:
            self.client.log_figure(self.run_id, fig, artifact_file)
        finally:
            plt.close(fig)

    def log_dict(self, obj, artifact_file: str) -> None:
        import json

        self.client.log_dict(self.run_id, json.loads(redact(json.dumps(obj, default=str))),
                             artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, redact(text), artifact_file)

    def log_table(self, rows: list[dict], artifact_file: str) -> None:
        """``rows`` as CSV at ``artifact_file`` and, beside it, as an MLflow table (``.json``:
        the UI's artifact view and ``mlflow.load_table`` compare it across runs)."""
        import json

        import pandas as pd

        text = redact(rows_to_csv(rows))
        self.client.log_text(self.run_id, text, artifact_file)
        if rows and artifact_file.endswith(".csv"):
            clean = json.loads(redact(json.dumps(rows, default=str)))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.client.log_table(self.run_id, data=pd.DataFrame(clean),
                                      artifact_file=artifact_file[:-4] + ".json")

    def log_artifact(self, local_path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(local_path), artifact_path)

    def log_artifacts(self, local_dir, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def find_run(self, tags: dict) -> str | None:
        """Id of a FINISHED run (any experiment) carrying all ``tags``, or None."""
        exps = [e.experiment_id for e in self.client.search_experiments()]
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs(exps, filter_string=query + " and attributes.status = 'FINISHED'",
                                       max_results=1)
        return runs[0].info.run_id if runs else None

    def last_step(self, key: str) -> int:
        """Highest step logged for metric ``key`` in this run (-1 if none)."""
        return max((m.step for m in self.client.get_metric_history(self.run_id, key)), default=-1)

    def log_model(self, model_dir, name: str = "model", register_as: str = "",
                  alias: str = "", metrics: dict | None = None) -> str:
        """Log a covidseg model folder (``model.json`` + ``model.pt``) as an MLflow pyfunc model
        (models from code, :mod:`covidseg.mlflow_model`), optionally registered; returns its URI,
        also recorded in the run's ``covidseg.model_uri`` tag."""
        import mlflow

        package = Path(__file__).resolve().parent
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            info = mlflow.pyfunc.log_model(
                name=name, python_model=str(package / "mlflow_model.py"),
                artifacts={"weights": str(model_dir)}, code_paths=[str(package)],
                pip_requirements=model_requirements(), signature=model_signature(model_dir),
                registered_model_name=register_as or None)
        if metrics and getattr(info, "model_id", None):  # the model page shows its scores
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            items = [Metric(k, float(v), now, 0, model_id=info.model_id, run_id=self.run_id)
                     for k, v in metrics.items() if v is not None and np_isfinite(v)]
            for i in range(0, len(items), 500):
                self.client.log_batch(self.run_id, metrics=items[i:i + 500])
        tags = {f"{TAG_PREFIX}model_uri": info.model_uri}
        if register_as and info.registered_model_version:
            tags[f"{TAG_PREFIX}registered"] = f"models:/{register_as}/{info.registered_model_version}"
            if alias:  # e.g. champion: predict -P model=models:/NAME@champion follows it
                self.client.set_registered_model_alias(register_as, alias,
                                                       str(info.registered_model_version))
                tags[f"{TAG_PREFIX}alias"] = f"models:/{register_as}@{alias}"
        self.set_tags(tags)
        return info.model_uri

    def log_dataset_input(self, name: str, digest: str, source: dict, profile: dict,
                          context: str = "training") -> None:
        """The preprocessed dataset as the run's MLflow dataset input (the UI's "Datasets"):
        ``digest`` is its content key, so two runs on the same data show the same digest."""
        import json

        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(name=name[:500], digest=digest, source_type="covidseg-preprocessed",
                          source=json.dumps(source), profile=json.dumps(profile))
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(
            dataset, tags=[InputTag("mlflow.data.context", context)])])

    def link_source(self, role: str, run_id: str | None) -> None:
        """Lineage: record that this run used ``run_id`` as its ``role`` input."""
        if not run_id:
            return
        self._sources[role] = run_id
        self.set_tags({f"{TAG_PREFIX}source.{role}": run_id,
                       f"{TAG_PREFIX}sources": ",".join(sorted(set(self._sources.values())))})


# what the logged model needs to predict, pinned to this machine's versions (covidseg itself
# travels with the model as code)
MODEL_PACKAGES = ("torch", "segmentation-models-pytorch", "SimpleITK", "numpy", "scipy", "pandas",
                  "mlflow", "lungmask", "tqdm", "PyYAML")


def model_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist in MODEL_PACKAGES:
        try:
            out.append(f"{dist}=={version(dist).split('+')[0]}")
        except PackageNotFoundError:
            out.append(dist)
    return out


def model_signature(model_dir):
    """The logged model's signature: its inference parameters with their defaults — the decision
    threshold stored with the model and ``restrict_to_lungs`` — so that ``predict(...,
    params={"threshold": p})`` reaches the model (MLflow drops params a model does not declare).
    Inputs are arrays of any shape or a DataFrame of paths: no input schema."""
    import json

    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec

    config = json.loads((Path(model_dir) / "model.json").read_text())
    return ModelSignature(inputs=None, outputs=None, params=ParamSchema([
        ParamSpec("threshold", "double", float(config.get("threshold") or 0.5)),
        ParamSpec("restrict_to_lungs", "boolean", True)]))


EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


# where an entry point's database URL (with its password) may come from instead of a parameter
STORAGE_VARIABLES = {"tune": "COVIDSEG_OPTUNA_STORAGE", "grid": "COVIDSEG_GRID_STORAGE"}


def run_name(entry_point: str) -> str:
    """One naming scheme for every door (covidseg NAME, python entrypoints/NAME.py, mlflow run,
    nested stages): ``<entry point>-<YYYYmmdd-HHMMSS>``."""
    return f"{entry_point}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_identity(entry_point: str, existing: dict, renamed: bool = True) -> dict:
    """Tags every covidseg run carries whatever started it: its name (``mlflow run`` picks a
    random one), the git commit (``mlflow run`` sets ``mlflow.source.git.commit`` itself, the
    other doors did not) and the user (a client-created nested run has none)."""
    import getpass

    tags = {}
    if renamed:
        tags["mlflow.runName"] = run_name(entry_point)
    commit = git_commit()
    if commit:
        tags[f"{TAG_PREFIX}git_commit"] = commit
        if "mlflow.source.git.commit" not in existing:
            tags["mlflow.source.git.commit"] = commit.removesuffix("-dirty")
    if "mlflow.user" not in existing:
        with contextlib.suppress(Exception):
            tags["mlflow.user"] = os.environ.get("MLFLOW_TRACKING_USERNAME") or getpass.getuser()
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


@contextlib.contextmanager
def start_run(entry_point: str, cfg, enabled: bool = True, run_id: str | None = None):
    """Open the run of one entry-point invocation and yield its tracker.

    Under ``mlflow run`` the run already exists (``MLFLOW_RUN_ID``) and is reused; ``run_id``
    re-opens a given run (``resume``).  ``enabled=False`` yields a :class:`NullTracker`.
    """
    if not enabled:
        yield NullTracker()
        return
    _configure_http()
    check_server()
    import mlflow

    env_run = os.environ.get("MLFLOW_RUN_ID")
    experiment = getattr(cfg, "experiment", "") or entry_point
    if run_id and env_run and env_run != run_id:
        # `mlflow run -P resume=ID` opened a fresh run: point it at the run that continues
        from mlflow.tracking import MlflowClient

        MlflowClient().set_tag(env_run, f"{TAG_PREFIX}continued_in", run_id)
    system = system_metrics_enabled()
    if run_id or env_run:
        active = mlflow.start_run(run_id=run_id or env_run, log_system_metrics=system)
    else:
        try:
            mlflow.set_experiment(experiment)
        except Exception as exc:  # e.g. a deleted experiment of that name
            raise ConfigError(f"experiment={experiment!r}: {first_line(exc)}") from exc
        active = mlflow.start_run(run_name=run_name(entry_point), log_system_metrics=system)
    tracker = MlflowTracker(active.info.run_id)
    tags = {f"{TAG_PREFIX}entry_point": entry_point, f"{TAG_PREFIX}version": __version__,
            **run_identity(entry_point, active.data.tags, renamed=bool(env_run and not run_id))}
    status = "FAILED"
    try:
        mark_training_experiment(tracker.client, active.info.experiment_id)
        tracker.set_tags(tags)
        if not run_id:
            # `mlflow run` has logged the MLproject parameters already (empty ones as "''"):
            # add only what it did not, since MLflow refuses to change a logged value
            logged = tracker.client.get_run(tracker.run_id).data.params if env_run else {}
            leaked = sorted(k for k, v in logged.items() if redact(v) != v)
            if leaked:  # `mlflow run` logged the -P values before covidseg ran: too late to redact
                raise ConfigError(
                    f"{', '.join(leaked)} holds a password, and `mlflow run` has logged it as a "
                    f"parameter of run {tracker.run_id}: delete that run, and give the URL without "
                    "it (PGPASSWORD / ~/.pgpass) or through "
                    f"{STORAGE_VARIABLES.get(entry_point, 'COVIDSEG_OPTUNA_STORAGE')}")
            tracker.log_params({k: v for k, v in cfg.to_params().items() if k not in logged})
        yield tracker
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except Exception as exc:
        if _server_lost(exc):
            raise TrackingUnavailable(
                f"the MLflow tracking server {tracking_uri()} stopped answering during run "
                f"{tracker.run_id}; the training state stays in this machine's cache — restart "
                f"the server and continue with resume={tracker.run_id}") from exc
        with contextlib.suppress(Exception):
            tracker.set_tags({f"{TAG_PREFIX}error": " ".join(str(exc).split())[:1000]})
        raise
    finally:
        with contextlib.suppress(Exception):
            mlflow.end_run(status=status)


def _server_lost(exc: Exception) -> bool:
    """Did ``exc`` come from a remote tracking server that is no longer there?"""
    if isinstance(exc, TrackingUnavailable):
        return False
    try:
        check_server(timeout=3.0)
    except TrackingUnavailable:
        return True
    return False


@contextlib.contextmanager
def child_run(parent, name: str, entry_point: str, cfg=None, tags: dict | None = None):
    """A run nested under ``parent`` (tag ``mlflow.parentRunId`` set explicitly), in the parent's
    experiment; yields its tracker and ends it FINISHED, or KILLED for an exception whose
    ``run_status`` says so (a pruned trial), else FAILED."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    experiment_id = client.get_run(parent.run_id).info.experiment_id
    all_tags = {"mlflow.parentRunId": parent.run_id, f"{TAG_PREFIX}entry_point": entry_point,
                f"{TAG_PREFIX}version": __version__,
                **run_identity(entry_point, {}, renamed=False), **(tags or {})}
    run = client.create_run(experiment_id, run_name=name, tags=all_tags)
    tracker = MlflowTracker(run.info.run_id)
    if cfg is not None:
        tracker.log_params(cfg.to_params())
    try:
        yield tracker
    except BaseException as exc:
        status = getattr(exc, "run_status", "FAILED")
        with contextlib.suppress(Exception):
            tracker.set_tags({f"{TAG_PREFIX}error": " ".join(str(exc).split())[:1000]})
            client.set_terminated(tracker.run_id, status)
        raise
    client.set_terminated(tracker.run_id, "FINISHED")


# --- run references -------------------------------------------------------------------------

def is_run_ref(ref: str) -> bool:
    return bool(ref) and (RUN_ID_RE.match(ref) is not None or ref.startswith(("runs:/", "models:/")))


def resolve_run_ref(ref: str) -> tuple[str, str]:
    """``<run id>`` / ``runs:/<id>[/path]`` → (run id, artifact sub-path)."""
    if RUN_ID_RE.match(ref):
        return ref, ""
    m = re.match(r"^runs:/([0-9a-f]{32})/?(.*)$", ref)
    if m:
        return m.group(1), m.group(2)
    if ref.startswith("models:/"):
        import mlflow

        _configure_http()
        check_server()
        try:
            info = mlflow.models.get_model_info(ref)
        except Exception as exc:
            raise ConfigError(f"{ref}: model not found ({first_line(exc, 200)})") from exc
        return info.run_id, info.artifact_path
    raise ConfigError(f"{ref!r} is not a run id, runs:/ URI or models:/ URI")


def download_run_artifacts(run_id: str, artifact_path: str = "", dst: Path | None = None) -> Path:
    """Download (once, cached) ``artifact_path`` of a run; returns the local path."""
    import mlflow

    from covidseg.data.store import cache_root

    _configure_http()
    check_server()
    dst = Path(dst) if dst else cache_root() / "runs" / run_id
    # MLflow puts a file or folder artifact under dst by its last path component
    target = dst / Path(artifact_path).name if artifact_path else dst
    marker = target.with_name(target.name + ".complete") if artifact_path else dst / ".complete"
    if marker.exists() and target.exists():
        return target
    dst.mkdir(parents=True, exist_ok=True)
    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path or None,
                                                    dst_path=str(dst))
    except Exception as exc:
        raise ConfigError(f"run {run_id}: cannot download artifact {artifact_path or '/'} "
                          f"({first_line(exc, 200)})") from exc
    marker.write_text("ok")
    return Path(local)


def _find_model_dir(root: Path) -> Path | None:
    hits = sorted(Path(root).rglob("model.json"))
    return hits[0].parent if hits else None


def download_model(ref: str) -> tuple[Path, str | None]:
    """A covidseg model folder (``model.json`` + ``model.pt``) from a local folder, a run id or
    ``runs:/<id>`` (the run's logged model, else its ``model`` artifacts) or a ``models:/`` URI;
    returns (folder, the run that produced it)."""
    import mlflow

    from covidseg.data.store import cache_root

    if not ref:
        raise ConfigError("model= is empty: give a finetune run id, runs:/ or models:/ URI")
    local = Path(ref).expanduser()
    if not is_run_ref(ref) and local.is_dir():
        found = _find_model_dir(local)
        if found is None:
            raise ConfigError(f"{local}: holds no covidseg model (model.json + model.pt)")
        return found, None
    if not is_run_ref(ref):
        raise ConfigError(f"model={ref!r} is not a run id, runs:/ or models:/ URI, or a model folder")
    _configure_http()
    check_server()
    if ref.startswith("models:/"):
        try:
            info = mlflow.models.get_model_info(ref)
        except Exception as exc:
            raise ConfigError(f"{ref}: model not found ({first_line(exc, 200)})") from exc
        run_id, uri = info.run_id, ref
        key = info.model_id or re.sub(r"[^A-Za-z0-9_.-]", "_", ref)
    else:
        run_id, _ = resolve_run_ref(ref)
        run = run_info(run_id)
        uri = run.data.tags.get(f"{TAG_PREFIX}model_uri")
        if uri is None:  # a run that logged only its checkpoint folder (pretrain)
            return _require_model(download_run_artifacts(run_id, "model"), ref), run_id
        key = uri.rsplit("/", 1)[-1]
    dst = cache_root() / "models" / key
    marker = dst / ".complete"
    if not marker.exists():
        dst.mkdir(parents=True, exist_ok=True)
        try:
            mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst))
        except Exception as exc:
            raise ConfigError(f"{ref}: cannot download the model ({first_line(exc, 200)})") from exc
        marker.write_text("ok")
    return _require_model(dst, ref), run_id


def _require_model(root: Path, ref: str) -> Path:
    found = _find_model_dir(root)
    if found is None:
        raise ConfigError(f"{ref}: the run has no covidseg model (model.json + model.pt)")
    return found


def list_run_artifacts(run_id: str, path: str = "") -> list[str]:
    """Artifact paths directly under ``path`` of a run."""
    from mlflow.tracking import MlflowClient

    _configure_http()
    check_server()
    return [a.path for a in MlflowClient().list_artifacts(run_id, path or None)]


def run_info(run_id: str):
    """The MLflow run (params, tags, status) of ``run_id``; one-line error when unknown."""
    from mlflow.tracking import MlflowClient

    _configure_http()
    check_server()
    try:
        return MlflowClient().get_run(run_id)
    except Exception as exc:
        raise ConfigError(f"run {run_id}: not found on {tracking_uri()} "
                          f"({first_line(exc, 200)})") from exc


def quiet_mlflow_warnings() -> None:
    """MLflow's own deprecation chatter is not for our users' terminals."""
    warnings.filterwarnings("ignore", module=r"mlflow\..*", category=FutureWarning)


# --- the tracking server --------------------------------------------------------------------

def server_command(backend_store_uri: str | None, artifacts_destination: str,
                   host: str = "0.0.0.0", port: int = 5000, allowed_hosts: str | None = None,
                   workers: int = 1, executable: list[str] | None = None,
                   auth: bool = False) -> list[str]:
    """The ``mlflow server`` command line the group server runs (docker-compose and tests alike):
    a database backend store (None: from ``MLFLOW_BACKEND_STORE_URI``, so that its password is
    not on the command line), artifacts served by the server itself, MLflow 3's Host check, and
    with ``auth`` MLflow's basic-auth app (login required; admin from
    ``MLFLOW_AUTH_ADMIN_USERNAME``/``_PASSWORD``, see :func:`auth_environment`)."""
    cmd = list(executable or ["mlflow"]) + ["server"]
    if backend_store_uri:
        cmd += ["--backend-store-uri", backend_store_uri]
    cmd += [
        "--serve-artifacts",
        "--artifacts-destination", artifacts_destination,
        "--host", host,
        "--port", str(port),
        "--workers", str(workers),
    ]
    if allowed_hosts:
        cmd += ["--allowed-hosts", allowed_hosts]
    if auth:
        cmd += ["--app-name", "basic-auth"]
    return cmd


def auth_environment(root: Path, username: str, password: str, secret_key: str) -> dict:
    """Environment of a basic-auth ``mlflow server``: its config file (users in ``root``'s
    SQLite, every user reads by default), the first admin, the CSRF key — secrets in the
    environment, never on a command line."""
    ini = Path(root) / "basic_auth.ini"
    ini.write_text("[mlflow]\ndefault_permission = READ\n"
                   f"database_uri = sqlite:///{Path(root).resolve() / 'basic_auth.db'}\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    return {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_USERNAME": username,
            "MLFLOW_AUTH_ADMIN_PASSWORD": password, "MLFLOW_FLASK_SERVER_SECRET_KEY": secret_key}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    """A throw-away ``mlflow server`` (the group server's command, SQLite by default) on a free
    loopback port: the tests and the benchmarks start one when no server is given."""

    def __init__(self, root: Path, backend_store_uri: str | None = None,
                 auth: tuple[str, str] | None = None):
        import sys

        self.root = Path(root)
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        backend = backend_store_uri or f"sqlite:///{self.root / 'mlflow.db'}"
        self.cmd = server_command(backend, str(self.root / "artifacts"), host="127.0.0.1",
                                  port=self.port, workers=1,
                                  executable=[sys.executable, "-m", "mlflow"], auth=bool(auth))
        self.auth = auth
        self.proc = None

    def start(self, timeout: float = 120.0) -> "LocalServer":
        import requests

        self.root.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        if self.auth:
            env.update(auth_environment(self.root, *self.auth, secret_key=os.urandom(16).hex()))
        with open(self.root / "server.log", "ab") as log:
            self.proc = subprocess.Popen(self.cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, cwd=self.root)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                tail = (self.root / "server.log").read_text(errors="replace")[-2000:]
                raise TrackingUnavailable(f"mlflow server exited: {tail}")
            try:
                if requests.get(self.uri + "/health", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.stop()
        raise TrackingUnavailable(f"mlflow server on {self.uri} did not become healthy")

    def stop(self) -> None:
        import signal

        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
