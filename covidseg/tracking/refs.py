"""Run references to local files: a run id, ``runs:/<id>[/path]`` or ``models:/name/version``
(``models:/name@alias``) becomes a run, an artifact folder or a covidseg model folder on this
machine.  Downloads are cached (:mod:`covidseg.base.paths`) and complete only once a ``.complete``
marker is written, so an interrupted download is fetched again, a finished one never.
"""

from __future__ import annotations

import re
from pathlib import Path

from covidseg.base.errors import ConfigError, first_line
from covidseg.base.paths import downloaded_model_dir, downloaded_run_dir
from covidseg.tracking.client import connect, tracking_uri
from covidseg.tracking.tags import Tag

RUN_ID_RE = re.compile(r"^[0-9a-f]{32}$")


def is_run_ref(ref: str) -> bool:
    """``ref`` names a run or a model on the tracking server (not a local path)."""
    return bool(ref) and (RUN_ID_RE.match(ref) is not None
                          or ref.startswith(("runs:/", "models:/")))


def resolve_run_ref(ref: str) -> tuple[str, str]:
    """``<run id>`` / ``runs:/<id>[/path]`` / ``models:/…`` → (run id, artifact sub-path)."""
    if RUN_ID_RE.match(ref):
        return ref, ""
    m = re.match(r"^runs:/([0-9a-f]{32})/?(.*)$", ref)
    if m:
        return m.group(1), m.group(2)
    if ref.startswith("models:/"):
        connect()
        info = _model_info(ref)
        return info.run_id, info.artifact_path
    raise ConfigError(f"{ref!r} is not a run id, runs:/ URI or models:/ URI")


def _model_info(ref: str):
    """The logged model a ``models:/`` URI names (the server was checked)."""
    import mlflow

    try:
        return mlflow.models.get_model_info(ref)
    except Exception as exc:
        raise ConfigError(f"{ref}: model not found ({first_line(exc, 200)})") from exc


def run_info(run_id: str):
    """The MLflow run (params, tags, status) of ``run_id``; one-line error when unknown."""
    from mlflow.tracking import MlflowClient

    connect()
    try:
        return MlflowClient().get_run(run_id)
    except Exception as exc:
        raise ConfigError(f"run {run_id}: not found on {tracking_uri()} "
                          f"({first_line(exc, 200)})") from exc


# The MLflow UI's sidebar defaults to its GenAI view in a fresh browser (the choice lives in the
# browser's localStorage, MLflow issue #24498, not fixed by 3.18.0); a ``workflowType`` query in
# the link sets the "Model training" view, so a link covidseg prints opens on the runs.
UI_VIEW = "workflowType=machine_learning"


def ui_link(experiment_id: str, run_id: str | None = None) -> str | None:
    """The MLflow UI's page of a run (or of an experiment's runs table) in its training view, on
    the tracking server; None when the tracking URI is not a web server."""
    uri = tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return None
    from covidseg.base.redact import redact

    page = f"runs/{run_id}" if run_id else "runs"
    return f"{redact(uri.rstrip('/'))}/#/experiments/{experiment_id}/{page}?{UI_VIEW}"


def list_run_artifacts(run_id: str, path: str = "") -> list[str]:
    """Artifact paths directly under ``path`` of a run."""
    from mlflow.tracking import MlflowClient

    connect()
    return [a.path for a in MlflowClient().list_artifacts(run_id, path or None)]


def download_run_artifacts(run_id: str, artifact_path: str = "", dst: Path | None = None) -> Path:
    """Download (once, cached) ``artifact_path`` of a run; returns the local path."""
    import mlflow

    connect()
    dst = Path(dst) if dst else downloaded_run_dir(run_id)
    # MLflow puts a file or folder artifact under dst by its last path component
    target = dst / Path(artifact_path).name if artifact_path else dst
    marker = target.with_name(target.name + ".complete") if artifact_path else dst / ".complete"
    if marker.exists() and target.exists():
        return target
    dst.mkdir(parents=True, exist_ok=True)
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact_path or None, dst_path=str(dst))
    except Exception as exc:
        raise ConfigError(f"run {run_id}: cannot download artifact {artifact_path or '/'} "
                          f"({first_line(exc, 200)})") from exc
    marker.write_text("ok")
    return Path(local)


def download_model(ref: str) -> tuple[Path, str | None]:
    """A covidseg model folder (``model.json`` + ``model.pt``) from a local folder, a run id or
    ``runs:/<id>`` (the run's logged model, else its ``model`` artifacts) or a ``models:/`` URI;
    returns (folder, the run that produced it)."""
    import mlflow

    if not ref:
        raise ConfigError("model= is empty: give a finetune run id, runs:/ or models:/ URI")
    local = Path(ref).expanduser()
    if not is_run_ref(ref) and local.is_dir():
        found = _find_model_dir(local)
        if found is None:
            raise ConfigError(f"{local}: holds no covidseg model (model.json + model.pt)")
        return found, None
    if not is_run_ref(ref):
        raise ConfigError(f"model={ref!r} is not a run id, runs:/ or models:/ URI, or a model "
                          "folder")
    connect()
    if ref.startswith("models:/"):
        info = _model_info(ref)
        run_id, uri = info.run_id, ref
        key = info.model_id or re.sub(r"[^A-Za-z0-9_.-]", "_", ref)
    else:
        run_id, _ = resolve_run_ref(ref)
        run = run_info(run_id)
        uri = run.data.tags.get(Tag.MODEL_URI)
        if uri is None:  # a run that logged only its checkpoint folder (pretrain)
            return _require_model(download_run_artifacts(run_id, "model"), ref), run_id
        key = uri.rsplit("/", 1)[-1]
    dst = downloaded_model_dir(key)
    marker = dst / ".complete"
    if not marker.exists():
        dst.mkdir(parents=True, exist_ok=True)
        try:
            mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst))
        except Exception as exc:
            raise ConfigError(f"{ref}: cannot download the model ({first_line(exc, 200)})") \
                from exc
        marker.write_text("ok")
    return _require_model(dst, ref), run_id


def _find_model_dir(root: Path) -> Path | None:
    hits = sorted(Path(root).rglob("model.json"))
    return hits[0].parent if hits else None


def _require_model(root: Path, ref: str) -> Path:
    found = _find_model_dir(root)
    if found is None:
        raise ConfigError(f"{ref}: the run has no covidseg model (model.json + model.pt)")
    return found
