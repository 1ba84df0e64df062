"""Resuming a killed training run, in one place.

* :class:`ResumeWriter` writes the loop's state (:meth:`covidseg.train.trainer.Trainer.state_dict`)
  to ``last.pt`` in the run's local work folder from a background thread, atomically;
* :func:`find_resume_state` reads it back: this machine's copy, else the one the run uploaded as
  ``resume/last.pt`` when it stopped with an error.

The configuration the killed run was started with is the stage layer's to rebuild
(:func:`covidseg.stages.stage.config_of_run`).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import torch

from covidseg.base.errors import ConfigError
from covidseg.models.checkpoint import save_atomically

log = logging.getLogger("covidseg.train")


def save_resume_state(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomically(state, path)


def load_resume_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def snapshot(obj):
    """A CPU copy of a (nested) state that training will keep mutating in place."""
    if torch.is_tensor(obj):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(snapshot(v) for v in obj)
    return obj


class ResumeWriter:
    """Writes resume states to ``path`` in a background thread, one at a time, atomically (a kill
    mid-write leaves the previous complete state).  A write the file system refuses (disk full,
    quota) is warned about once, its partial file removed, and the run goes on without resume
    (no later write is tried); :meth:`wait` re-raises any other error."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.disabled: OSError | None = None  # the write error that switched resume off

    def submit(self, state: dict) -> None:
        self.wait()
        if self.disabled is not None:
            return
        self._thread = threading.Thread(target=self._write, args=(state,), daemon=True,
                                        name="covidseg-resume-writer")
        self._thread.start()

    def _write(self, state: dict) -> None:
        try:
            save_resume_state(self.path, state)
        except BaseException as exc:  # reported by wait() on the training thread
            self._error = exc

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is None:
            return
        exc, self._error = self._error, None
        if not isinstance(exc, OSError):
            raise exc
        self.disabled = exc
        self.path.unlink(missing_ok=True)  # an older state would resume the wrong epoch
        log.warning("could not write the resume state %s (%s): training goes on, but this run "
                    "cannot be resumed if it stops", self.path, exc.strerror or exc)


def find_resume_state(run_id: str, workdir: Path) -> dict:
    """The resume state of a killed run: this machine's copy, else the one the run uploaded."""
    from covidseg.tracking import download_run_artifacts

    local = workdir / "last.pt"
    if not local.exists():
        try:
            local = download_run_artifacts(run_id, "resume/last.pt", dst=workdir / "downloaded")
        except ConfigError as exc:
            raise ConfigError(f"resume={run_id}: no resume state on this machine ({workdir}) and "
                              "none uploaded with the run") from exc
    return load_resume_state(local)
