"""Checkpoints are a state dict plus a JSON config, loaded with ``torch.load(weights_only=True)``:
nothing unpickles arbitrary objects from an artifact."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from covidseg.base.errors import ConfigError, first_line
from covidseg.models.factory import ModelSpec, build_model

# how torch's stream writer reports a write the file system refused (disk full, quota)
WRITE_FAILURES = ("iostream error", "failed writing", "file write failed", "unexpected pos")


def save_atomically(obj, path: Path) -> None:
    """``torch.save`` through ``path.tmp``: a kill mid-write leaves the previous complete file; a
    write the file system refuses leaves no partial file and raises :class:`OSError` (torch
    reports a full disk as a ``RuntimeError`` of its stream writer)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(obj, tmp)
        tmp.replace(path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        text = (str(exc).splitlines() or [""])[0]
        if isinstance(exc, RuntimeError) and any(w in text for w in WRITE_FAILURES):
            import shutil

            free = shutil.disk_usage(path.parent).free / 2**20
            raise OSError(f"{free:.0f} MB free on its disk; torch: {text[:100]}") from exc
        raise


def save_model(directory: Path, model: nn.Module, spec: ModelSpec, extra: dict | None = None,
               dtype: torch.dtype | None = None) -> Path:
    """Write ``model.pt`` (state dict; the parameters as ``dtype`` when given — loading casts them
    back; buffers such as norm statistics stay as they are: a running variance may not fit
    float16) and ``model.json`` (spec + extra) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if dtype is not None:
        params = {k for k, _ in model.named_parameters()}
        state = {k: v.to(dtype) if k in params and v.is_floating_point() else v
                 for k, v in state.items()}
    save_atomically(state, directory / "model.pt")
    (directory / "model.json").write_text(json.dumps({"model": spec.to_dict(), **(extra or {})},
                                                     indent=1))
    return directory


def load_model(directory: Path, map_location="cpu",
               single: bool = False) -> tuple[nn.Module, dict]:
    """Rebuild the network from ``model.json`` and load ``model.pt`` (weights only).
    ``single``: refuse an ensemble (a cross-validation run's model) where one network is needed
    (an init, a student, an encoder for features, SVCCA)."""
    directory = Path(directory)
    cfg_path, pt_path = directory / "model.json", directory / "model.pt"
    if not cfg_path.exists() or not pt_path.exists():
        raise ConfigError(f"{directory}: not a covidseg model (needs model.json and model.pt)")
    config = json.loads(cfg_path.read_text())
    members = int(config["model"].get("members", 1))
    if single and members > 1:
        runs = ", ".join(config.get("ensemble_of", [])) or "its fold runs"
        raise ConfigError(f"the model of run {config.get('run_id', directory)} is an ensemble of "
                          f"{members} networks (cv=): give one network here, e.g. one of {runs}")
    model = build_model(ModelSpec(**config["model"]))
    try:
        state = torch.load(pt_path, map_location=map_location, weights_only=True)
    except Exception as exc:
        first = first_line(exc, 200)
        raise ConfigError(f"{pt_path}: cannot load weights ({first})") from exc
    model.load_state_dict(state)
    return model, config
