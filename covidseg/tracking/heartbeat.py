"""Runs whose process died: a heartbeat on every open run, and ``tidy`` to close the silent ones.

While a covidseg run is open (an entry point's run, a nested fold/trial/stage run) one daemon
thread of its process sets the tag ``covidseg.heartbeat`` (unix seconds) every
``COVIDSEG_HEARTBEAT_S`` seconds (60).  A process killed by SIGKILL, the OOM killer or a lost
machine leaves its runs RUNNING; :func:`tidy_runs` — ``covidseg tidy``, and the start of every
stage in its own experiment — marks a RUNNING run whose heartbeat is older than five of its own
beats (``covidseg.heartbeat_s`` records its interval; at least ``COVIDSEG_HEARTBEAT_GRACE_S``)
FAILED, with the reason in ``covidseg.error``.  Runs without the tag (other tools', older
covidseg's) are left alone.  A run failed so while its process lived (its beats late: a long
outage) is set RUNNING again by its next beat.  The beats are the clients' clocks: keep the
machines' clocks in sync (NTP).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time

from covidseg.tracking.tags import Tag

HEARTBEAT_TAG = Tag.HEARTBEAT.value
INTERVAL_TAG = Tag.HEARTBEAT_S.value
SILENT = "its process stopped sending heartbeats"  # how tidy's error tag begins
log = logging.getLogger("covidseg.tracking")


def interval_s() -> float:
    return float(os.environ.get("COVIDSEG_HEARTBEAT_S", "60"))


def grace_s() -> float:
    return float(os.environ.get("COVIDSEG_HEARTBEAT_GRACE_S", str(5 * interval_s())))


class _Beater:
    """The process's one heartbeat thread, beating for every run in :attr:`runs`."""

    def __init__(self):
        self.runs: set[str] = set()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def beat(self, run_id: str) -> None:
        """Set the beat; a run another process's tidy failed while this one was alive (its beats
        late: a long outage, a slow link) is set RUNNING again."""
        from mlflow.tracking import MlflowClient

        with contextlib.suppress(Exception):  # a missed beat is not an error; a late one is
            client = MlflowClient()
            client.set_tag(run_id, HEARTBEAT_TAG, str(int(time.time())))
            run = client.get_run(run_id)
            if (run.info.status == "FAILED"
                    and run.data.tags.get(Tag.ERROR.value, "").startswith(SILENT)):
                client.update_run(run_id, status="RUNNING")
                client.delete_tag(run_id, Tag.ERROR.value)
                log.warning("run %s had been marked FAILED by covidseg tidy while its process "
                            "was alive (its heartbeats came late): RUNNING again", run_id)

    def _loop(self) -> None:
        while True:
            time.sleep(interval_s())
            with self.lock:
                runs = list(self.runs)
            for run_id in runs:
                self.beat(run_id)

    def add(self, run_id: str) -> None:
        from mlflow.tracking import MlflowClient

        with contextlib.suppress(Exception):  # the interval tidy judges this run's beats by
            MlflowClient().set_tag(run_id, INTERVAL_TAG, f"{interval_s():g}")
        self.beat(run_id)
        with self.lock:
            self.runs.add(run_id)
            if self.thread is None:
                self.thread = threading.Thread(target=self._loop, daemon=True,
                                               name="covidseg-heartbeat")
                self.thread.start()

    def remove(self, run_id: str) -> None:
        with self.lock:
            self.runs.discard(run_id)


_BEATER = _Beater()


def start_beating(run_id: str) -> None:
    """Beat for ``run_id`` (now, then every :func:`interval_s`) until :func:`stop_beating`."""
    _BEATER.add(run_id)


def stop_beating(run_id: str) -> None:
    _BEATER.remove(run_id)


@contextlib.contextmanager
def heartbeat(run_id: str):
    """Beat for ``run_id`` while the block runs."""
    start_beating(run_id)
    try:
        yield
    finally:
        stop_beating(run_id)


def fail_abandoned_run(run_id: str, reason: str) -> None:
    """A run its process left RUNNING (the process died): mark it FAILED, with ``reason`` as its
    error tag.  Nothing happens when it ended meanwhile or the server refuses."""
    from mlflow.tracking import MlflowClient

    with contextlib.suppress(Exception):
        client = MlflowClient()
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_tag(run_id, Tag.ERROR.value, reason)
            client.set_terminated(run_id, "FAILED")


def tidy_runs(experiment_ids: list[str] | None = None, exclude: str = "",
              names: list[str] | None = None) -> list[str]:
    """Mark FAILED the RUNNING runs (of ``experiment_ids``, or the experiments called ``names``;
    neither: every experiment) whose heartbeat stopped more than five of their beats ago; their
    ids."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    from covidseg.base.errors import ConfigError

    client = MlflowClient()
    if names:
        found = {n: client.get_experiment_by_name(n) for n in names}
        missing = [n for n, e in found.items() if e is None]
        if missing:
            raise ConfigError(f"no experiment named {', '.join(missing)}")
        experiment_ids = [e.experiment_id for e in found.values()]
    if experiment_ids is None:
        experiment_ids = [e.experiment_id for e in client.search_experiments(ViewType.ACTIVE_ONLY)]
    if not experiment_ids:
        return []
    now, closed = time.time(), []
    for run in client.search_runs(experiment_ids, "attributes.status = 'RUNNING'",
                                  max_results=5000):
        beat, tags = run.data.tags.get(HEARTBEAT_TAG), run.data.tags
        # five of the run's own beats (as its process was told to send them), at least the grace
        limit = max(grace_s(), 5 * float(tags.get(INTERVAL_TAG) or interval_s()))
        if run.info.run_id == exclude or beat is None or now - float(beat) <= limit:
            continue
        again = client.get_run(run.info.run_id)  # a beat (a resume) since the search: alive
        if again.data.tags.get(HEARTBEAT_TAG) != beat:
            continue
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(beat)))
        fail_abandoned_run(run.info.run_id, f"{SILENT} at {when} (killed, out of memory, machine "
                                            "lost?): marked FAILED by covidseg tidy")
        closed.append(run.info.run_id)
    return closed
