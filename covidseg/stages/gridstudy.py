"""A grid's cells as the enqueued trials of an Optuna study — one study per grid, on the storage
``tune`` uses (PostgreSQL across machines, an SQLite file on one machine, memory for a grid run by
one process) — so that ``optuna-dashboard`` on that storage shows a grid's progress.

A cell is a trial whose user attributes hold its key (``grid_cell``), order, needed cell and
``info``, and the worker holding it, its MLflow run (``run_id``) and error:

    WAITING ──pop──▶ RUNNING ──finish──▶ COMPLETE (value: the cell's validation volume Dice)
       ▲                │
       └── retry ◀──────┴── fail / stale heartbeat ──▶ FAIL (retried while failures ≤ retries)

* **A claim is Optuna's pop**: ``set_trial_state_values(RUNNING)`` only from WAITING, under a
  row lock on PostgreSQL and ``BEGIN IMMEDIATE`` on SQLite (:mod:`covidseg.stages.studystore`:
  without it, 6 threads popped 5-11 of 100 cells twice).
* **Heartbeats and retries are Optuna's**: ``fail_stale_trials`` fails a trial silent for
  ``grace_s``, ``RetryHeartbeatStaleTrialCallback(max_retry=retries)`` enqueues it again with
  the dead worker's run id (the grid closes that run FAILED); a cell's exception goes through
  the same callback.
* **Registration needs no lock**: a worker enqueues the cells it does not see, so workers that
  register (or reopen) together may enqueue a cell twice.  Optuna numbers a study's trials under
  a lock on the study, so a lower-numbered twin is always seen: of a cell's live trials
  (waiting, running, complete) only the lowest runs, the others are PRUNED.
* A cell may ``need`` another (a finetune cell its pretrain cell): it is popped once that one is
  complete, and fails when that one has failed for good.

No MLflow here: the grid (``covidseg.stages.grid``) maps cells to runs.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState

from covidseg.base.errors import ConfigError
from covidseg.base.redact import redact
from covidseg.stages.studystore import one_line, open_storage, open_study, through_outages

log = logging.getLogger("covidseg.gridstudy")

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
LIVE = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE)


@dataclass
class Cell:
    """A cell to register: its key (the same on every worker), order, dependency and a JSON-able
    description the grid needs to run it."""

    key: str
    position: int
    needs: str = ""
    info: dict = field(default_factory=dict)


@dataclass
class Claim:
    """A cell this worker holds: ``token`` is its trial's id; ``needs_run`` the run id of the cell
    it needs; ``stale_run`` the run a dead worker left behind when this claim took its cell over."""

    key: str
    token: int
    info: dict
    failures: int
    needs_run: str = ""
    stale_run: str = ""
    lost: bool = False  # set when the trial turns out to be failed by another worker


def worker_name() -> str:
    return f"{socket.gethostname()}/{os.getpid()}"


def _cell_row(trials: list) -> dict:
    """A cell's state from its trials (PRUNED twins left out, in number order): done when one is
    complete, else running / pending with its lowest live trial, else failed with its last."""
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    live = [t for t in trials if t.state in LIVE]
    t = done[0] if done else live[0] if live else trials[-1]
    a = t.user_attrs
    state = {TrialState.WAITING: PENDING, TrialState.RUNNING: RUNNING,
             TrialState.COMPLETE: DONE}.get(t.state, FAILED)
    failures = len(t.system_attrs.get("retry_history", [])) + (
        state == FAILED and a.get("failed_by") != "needs")  # one that never ran: no failure
    error = a.get("error", "")
    if state == FAILED and not a.get("failed_by"):
        error = f"worker {a.get('worker', '')} stopped sending heartbeats"
    return {"cell": a["grid_cell"], "position": a["position"], "needs": a["needs"],
            "info": a["info"], "state": state, "failures": failures,
            "worker": a.get("worker", ""), "run_id": a.get("run_id", ""),
            "reused": bool(a.get("reused", False)), "error": error, "trial": t.number}


class GridStudy:
    """The cells of grid ``grid`` as trials of the study ``grid`` at ``url`` (module docstring)."""

    def __init__(self, url: str, grid: str, *, heartbeat_s: float = 10.0, grace_s: float = 150.0,
                 retries: int = 1):
        if grace_s <= heartbeat_s:
            raise ConfigError(f"grid cells: the grace period ({grace_s} s) must exceed the "
                              f"heartbeat interval ({heartbeat_s} s)")
        self.url, self.grid = url, grid
        self.heartbeat_s, self.grace_s, self.retries = heartbeat_s, grace_s, retries
        self.shown = redact(url) or "(in memory)"
        self.storage = open_storage(url, heartbeat_s, grace_s, retries)
        self.retry = self._db(optuna.storages.RetryHeartbeatStaleTrialCallback, max_retry=retries)
        self.study = self._db(open_study, self.storage, grid)

    def _db(self, work, *args, **kwargs):
        """``work(*args, **kwargs)`` through database outages (:func:`through_outages`)."""
        return through_outages(self.shown, f"its cell goes back to the queue once its heartbeat "
                               f"is older than {self.grace_s:.0f} s", work, *args, **kwargs)

    def _trials(self) -> list:
        """The study's trials: Optuna re-reads the unfinished and new ones (complete trials do
        not change; trials are numbered under a lock on the study, so none appears late)."""
        return self._db(self.study.get_trials, deepcopy=False)

    def _by_cell(self) -> dict[str, list]:
        out: dict[str, list] = {}
        for t in self._trials():
            if "grid_cell" in t.user_attrs and t.state != TrialState.PRUNED:
                out.setdefault(t.user_attrs["grid_cell"], []).append(t)
        return out

    def _set(self, trial_id: int, **attrs) -> bool:
        """Set user attributes of a trial; False when it has finished (another worker failed
        it meanwhile)."""
        try:
            for key, value in attrs.items():
                self._db(self.storage.set_trial_user_attr, trial_id, key, value)
        except optuna.exceptions.UpdateFinishedTrialError:
            return False
        return True

    def _to(self, trial_id: int, state: TrialState, values=None) -> bool:
        """Move a trial to ``state``; False when it had finished or (to RUNNING) was taken."""
        try:
            return self._db(self.storage.set_trial_state_values, trial_id, state, values)
        except optuna.exceptions.UpdateFinishedTrialError:
            return False

    def _enqueue(self, cell: dict, **attrs) -> None:
        self._db(self.study.enqueue_trial, {}, user_attrs={
            "grid_cell": cell["cell"], "position": cell["position"], "needs": cell["needs"],
            "info": cell["info"], **attrs})

    # --- setup ------------------------------------------------------------------------------
    def register(self, fingerprint: str, new_cells: list[Cell]) -> None:
        """Record the grid's fingerprint on its study (or check that its name means the same
        parameters) and enqueue the cells that have no trial yet."""
        known = self._db(lambda: self.study.user_attrs.get("fingerprint"))
        if known is None:
            self._db(self.study.set_user_attr, "fingerprint", fingerprint)
            known = self._db(lambda: self.study.user_attrs["fingerprint"])
        if known != fingerprint:
            raise ConfigError(f"grid {self.grid!r} in {self.shown} was started with other "
                              "parameters: give this grid another grid_name (or the same "
                              "parameters to join it)")
        have = self._by_cell()
        for c in new_cells:
            if c.key not in have:
                self._enqueue({"cell": c.key, "position": c.position, "needs": c.needs,
                               "info": c.info})

    def reopen_failed(self) -> int:
        """A grid that has settled (nothing pending or running) with failed cells: enqueue them
        again, failures reset — a worker started on a finished grid retries what failed (workers
        reopening together enqueue twins; one of them runs).  Returns how many."""
        rows = self.rows()
        if any(r["state"] in (PENDING, RUNNING) for r in rows):
            return 0
        failed = [r for r in rows if r["state"] == FAILED]
        for r in failed:
            self._enqueue(r, error="retried after: " + r["error"])
        return len(failed)

    # --- reading ----------------------------------------------------------------------------
    def rows(self) -> list[dict]:
        """Every cell of the grid in order (see :func:`_cell_row`)."""
        return sorted((_cell_row(ts) for ts in self._by_cell().values()),
                      key=lambda r: r["position"])

    def counts(self) -> dict[str, int]:
        states = [r["state"] for r in self.rows()]
        return {s: states.count(s) for s in (PENDING, RUNNING, DONE, FAILED)}

    def settled(self) -> bool:
        """Every cell done or failed (none pending or running)."""
        c = self.counts()
        return c[PENDING] == 0 and c[RUNNING] == 0

    # --- claiming ---------------------------------------------------------------------------
    def claim(self, worker: str | None = None) -> Claim | None:
        """The first waiting trial (in the grid's order) whose needed cell is done, popped for
        ``worker`` after failing the stale ones (and re-enqueueing them); None when no cell is
        free now (others may still be running)."""
        worker = worker or worker_name()
        self._db(optuna.storages.fail_stale_trials, self.study)
        cells = self._by_cell()
        rows = {key: _cell_row(ts) for key, ts in cells.items()}
        waiting = sorted((t for ts in cells.values() for t in ts if t.state == TrialState.WAITING),
                         key=lambda t: (t.user_attrs["position"], t.number))
        for t in waiting:
            needed = rows.get(t.user_attrs["needs"])
            if needed is not None and needed["state"] in (PENDING, RUNNING):
                continue  # its pretrain cell is still to run: later
            # a trial is only ever changed by the worker that popped it: one read a moment ago
            # may be running elsewhere by now (a twin popped once its lower copy failed)
            if needed is not None and needed["state"] == FAILED:
                if self._pop(t._trial_id) and self._set(
                        t._trial_id, failed_by="needs",
                        error=f"needs {needed['cell']}, which failed"):
                    self._to(t._trial_id, TrialState.FAIL)
                continue
            lower = [o for o in cells[t.user_attrs["grid_cell"]]
                     if o.number < t.number and o.state in LIVE]
            if lower:  # a twin from workers registering together: the lowest one runs
                if self._pop(t._trial_id):
                    self._to(t._trial_id, TrialState.PRUNED)
                continue
            if self._pop(t._trial_id):
                claim = self._won(t, worker, needed)
                if claim is not None:
                    return claim
        return None

    def _pop(self, trial_id: int) -> bool:
        """Take a waiting trial for this worker (False: another took or finished it).  The
        heartbeat goes first: a popped trial always has one (Optuna never fails one without)."""
        self._beat(trial_id)
        return self._to(trial_id, TrialState.RUNNING)

    def _won(self, t, worker: str, needed: dict | None) -> Claim | None:
        """The popped trial ``t`` as this worker's claim (None if it was lost at once)."""
        a = t.user_attrs
        stale = "failed_trial" in t.system_attrs and not a.get("failed_by")
        fresh = {"worker": worker, "run_id": "", "failed_by": "",
                 "error": f"worker {a.get('worker', '')} stopped sending heartbeats" if stale
                 else a.get("error", "")}
        if not self._set(t._trial_id, **{k: v for k, v in fresh.items() if a.get(k, "") != v}):
            return None
        key = t.user_attrs["grid_cell"]
        if stale:
            log.warning("grid %s: cell %s taken over from %s (no heartbeat for %.0f s)",
                        self.grid, key, a.get("worker", ""), self.grace_s)
        return Claim(key, t._trial_id, a["info"], len(t.system_attrs.get("retry_history", [])),
                     needs_run=needed["run_id"] if needed is not None else "",
                     stale_run=a.get("run_id", "") if stale else "")

    # --- the holder's updates ---------------------------------------------------------------
    def _held(self, claim: Claim) -> bool:
        held = self._db(self.storage.get_trial, claim.token).state == TrialState.RUNNING
        claim.lost = claim.lost or not held
        return held

    def heartbeat(self, claim: Claim) -> bool:
        """Refresh the claim; False when another worker has failed (and re-queued) the cell."""
        if not self._held(claim):
            return False
        self._beat(claim.token)
        return True

    def _beat(self, trial_id: int) -> None:
        if hasattr(self.storage, "record_heartbeat"):  # not in memory (one process, no beats)
            self._db(self.storage.record_heartbeat, trial_id)

    def started(self, claim: Claim, run_id: str) -> bool:
        """Record the run the claim's work goes into (so that a worker taking over a dead
        worker's cell can close the run it left behind)."""
        ok = self._set(claim.token, run_id=run_id)
        claim.lost = claim.lost or not ok
        return ok

    def finish(self, claim: Claim, run_id: str, reused: bool = False,
               value: float = 0.0) -> bool:
        """The cell is done (``run_id``; ``value`` the trial's value); False when the claim had
        been lost meanwhile."""
        ok = self._set(claim.token, run_id=run_id, **({"reused": True} if reused else {})) and \
            self._to(claim.token, TrialState.COMPLETE, [value])
        claim.lost = claim.lost or not ok
        return ok

    def fail(self, claim: Claim, error: str) -> str:
        """Count a failure of the cell: enqueued again while failures ≤ retries, else failed.
        Returns the cell's new state ('' when the claim had been lost)."""
        message = redact(" ".join(str(error).split()))[:2000]
        if not (self._set(claim.token, failed_by="exception", worker="", error=message)
                and self._to(claim.token, TrialState.FAIL)):
            claim.lost = True
            return ""
        self._db(self.retry, self.study, self._db(self.storage.get_trial, claim.token))
        return PENDING if claim.failures + 1 <= self.retries else FAILED

    def release(self, claim: Claim) -> bool:
        """Give the cell back without counting a failure (this worker was stopped): its trial
        fails as released and a copy with the same retry history is enqueued."""
        if not (self._set(claim.token, failed_by="released") and
                self._to(claim.token, TrialState.FAIL)):
            return False
        t = self._db(self.storage.get_trial, claim.token)
        self._db(self.study.add_trial, optuna.trial.create_trial(
            state=TrialState.WAITING, user_attrs={**t.user_attrs, "worker": ""},
            system_attrs=t.system_attrs))
        return True

    @contextmanager
    def keep_alive(self, claim: Claim):
        """Send the claim's heartbeat every ``heartbeat_s`` from a thread while the block runs."""
        stop = threading.Event()

        def beat():
            while not stop.wait(self.heartbeat_s):
                try:
                    if not self.heartbeat(claim):
                        log.warning("grid %s: cell %s was taken over by another worker (this "
                                    "worker's heartbeats came too late)", self.grid, claim.key)
                        return
                except Exception as exc:  # the database is away: try again at the next beat
                    log.warning("grid %s: heartbeat failed: %s", self.grid, one_line(exc))

        thread = threading.Thread(target=beat, name=f"grid-heartbeat-{claim.key}", daemon=True)
        thread.start()
        try:
            yield claim
        finally:
            stop.set()
            thread.join(timeout=self.heartbeat_s + 30)

    def close(self) -> None:
        engine = getattr(self.storage, "engine", None)
        if engine is not None:
            self.storage.remove_session()
            engine.dispose()
