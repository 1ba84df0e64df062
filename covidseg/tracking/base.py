"""What a stage may ask of its run: the :class:`Tracker` protocol, and :class:`NullTracker`, the
implementation with tracking switched off (the library's default: it runs without a server).

:class:`covidseg.tracking.mlflow_tracker.MlflowTracker` is the other implementation.  Both
implement every method of the protocol themselves (neither inherits from the other), and a test
checks that they do: a method added to the protocol and forgotten in one of them fails the tests
instead of silently doing nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from covidseg.base.errors import first_line

log = logging.getLogger("covidseg.tracking")


@runtime_checkable
class Tracker(Protocol):
    """The run a stage logs to.  ``run_id`` is None and ``enabled`` False without tracking."""

    run_id: str | None
    enabled: bool

    def log_params(self, params: dict) -> None:
        """Record parameters (values redacted, one batch per 100)."""

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        """Record metric values at ``step`` (None values are left out)."""

    def set_tags(self, tags: dict) -> None:
        """Set run tags (values redacted); keys are :class:`~covidseg.tracking.tags.Tag`\\ s."""

    def log_figure(self, fig, artifact_file: str) -> None:
        """Log a matplotlib figure and close it."""

    def figure(self, artifact_file: str, fn: Callable, *args, **kwargs) -> None:
        """Draw ``fn(*args, **kwargs)`` and log it; a figure that cannot be drawn or uploaded is
        skipped with a warning — it never fails the run."""

    def log_dict(self, obj, artifact_file: str) -> None:
        """Log ``obj`` as JSON (redacted)."""

    def log_text(self, text: str, artifact_file: str) -> None:
        """Log a text file (redacted)."""

    def log_table(self, rows: list[dict], artifact_file: str) -> None:
        """Log ``rows`` as CSV (and, beside it, as an MLflow table)."""

    def log_artifact(self, local_path, artifact_path: str | None = None) -> None:
        """Upload one local file."""

    def log_artifacts(self, local_dir, artifact_path: str | None = None) -> None:
        """Upload a local folder."""

    def link_source(self, role: str, run_id: str | None) -> None:
        """Lineage: record that this run used ``run_id`` as its ``role`` input."""

    def log_dataset_input(self, name: str, digest: str, source: dict, profile: dict,
                          context: str = "training") -> None:
        """Record the preprocessed dataset as the run's dataset input."""

    def find_run(self, tags: dict) -> str | None:
        """Id of a FINISHED run carrying all ``tags``, or None."""

    def last_step(self, key: str) -> int:
        """Highest step logged for metric ``key`` in this run (-1 if none)."""

    def log_model(self, model_dir, name: str = "model", register_as: str = "",
                  alias: str = "", metrics: dict | None = None) -> str | None:
        """Log a covidseg model folder as an MLflow model; its URI (None without tracking)."""


def draw_and_log(tracker: Tracker, artifact_file: str, fn: Callable, *args, **kwargs) -> None:
    """:meth:`Tracker.figure` for every tracker: ``fn(*args, **kwargs)`` → a figure →
    ``tracker.log_figure``; a drawing or upload failure is a warning, never the run's end."""
    import matplotlib.pyplot as plt

    try:
        fig = fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - any drawing failure is only a missing figure
        plt.close("all")
        log.warning("figure %s skipped: %s: %s", artifact_file, type(exc).__name__,
                    str(exc).splitlines()[0] if str(exc) else "")
        return
    if fig is None:
        return
    try:
        tracker.log_figure(fig, artifact_file)
    except Exception as exc:  # noqa: BLE001
        log.warning("figure %s not logged: %s", artifact_file, first_line(exc, 200))


class NullTracker:
    """Tracking switched off: every call is a no-op.  The library runs with it by default."""

    run_id: str | None = None
    enabled = False

    def log_params(self, params: dict) -> None:
        pass

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        pass

    def set_tags(self, tags: dict) -> None:
        pass

    def log_figure(self, fig, artifact_file: str) -> None:
        import matplotlib.pyplot as plt

        plt.close(fig)

    def figure(self, artifact_file: str, fn: Callable, *args, **kwargs) -> None:
        """Draws the figure (a broken figure function shows up without a server too), logs
        nothing."""
        draw_and_log(self, artifact_file, fn, *args, **kwargs)

    def log_dict(self, obj, artifact_file: str) -> None:
        pass

    def log_text(self, text: str, artifact_file: str) -> None:
        pass

    def log_table(self, rows: list[dict], artifact_file: str) -> None:
        pass

    def log_artifact(self, local_path, artifact_path: str | None = None) -> None:
        pass

    def log_artifacts(self, local_dir, artifact_path: str | None = None) -> None:
        pass

    def link_source(self, role: str, run_id: str | None) -> None:
        pass

    def log_dataset_input(self, name: str, digest: str, source: dict, profile: dict,
                          context: str = "training") -> None:
        pass

    def find_run(self, tags: dict) -> str | None:
        return None

    def last_step(self, key: str) -> int:
        return -1

    def log_model(self, model_dir, name: str = "model", register_as: str = "",
                  alias: str = "", metrics: dict | None = None) -> str | None:
        return None
