"""Claims on a grid's cells in a database that several workers share (PostgreSQL across machines,
an SQLite file on one, an in-memory SQLite database for a grid run by one process).

Two tables: ``covidseg_grids`` (a grid's name and the fingerprint of its parameters, so that a name
never silently means two different grids) and ``covidseg_grid_cells``, one row per cell:

    pending ──claim──▶ running ──finish──▶ done (run id)
       ▲                  │
       └──fail / stale ───┴──(more than ``retries`` failures)──▶ failed (error)

* **Registration is idempotent**: every worker inserts the grid's cells with ``ON CONFLICT DO
  NOTHING``; the first insert wins, the others change nothing.
* **A claim is one conditional UPDATE** (compare-and-set): ``SET state='running', token=<new>
  WHERE cell=… AND token=<the token read> AND (state='pending' OR <heartbeat stale>)``.  Two
  workers that read the same free cell both try it; PostgreSQL locks the row for the first
  UPDATE, re-checks the second one's WHERE against the committed row (READ COMMITTED) and
  updates nothing — its token changed — and SQLite runs one writer at a time.  The loser tries
  the next cell.  No cell is ever held by two live claims.
* **Heartbeats**: the holder refreshes ``heartbeat`` every ``heartbeat_s``; a running cell whose
  heartbeat is older than ``grace_s`` belongs to a worker that died (or lost the database) and is
  claimed again, counting one failure.  Times are the database server's clock, so machines whose
  clocks disagree judge staleness alike.
* **Failures**: an exception in the cell (``fail``) or a stale heartbeat counts one failure; a
  cell is retried while its failures ≤ ``retries``, then stays ``failed`` with its error — no
  endless retry of a cell that cannot succeed.  A cell may ``need`` another (a finetune cell its
  pretrain cell): it is claimable once that one is done, and fails when that one fails.

No MLflow here: the grid (``covidseg.stages.grid``) maps cells to runs.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field

import sqlalchemy as sa

from covidseg.errors import ConfigError, DatabaseUnavailable, first_line
from covidseg.redact import redact

log = logging.getLogger("covidseg.gridclaims")

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"

metadata = sa.MetaData()
grids = sa.Table(
    "covidseg_grids", metadata,
    sa.Column("grid", sa.String(200), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("created", sa.Float, nullable=False),
)
cells = sa.Table(
    "covidseg_grid_cells", metadata,
    sa.Column("grid", sa.String(200), primary_key=True),
    sa.Column("cell", sa.String(400), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("needs", sa.String(400), nullable=False, default=""),
    sa.Column("info", sa.Text, nullable=False, default="{}"),
    sa.Column("state", sa.String(16), nullable=False, default=PENDING),
    sa.Column("token", sa.String(32), nullable=False, default=""),
    sa.Column("failures", sa.Integer, nullable=False, default=0),
    sa.Column("worker", sa.String(400), nullable=False, default=""),
    sa.Column("heartbeat", sa.Float),
    sa.Column("run_id", sa.String(64), nullable=False, default=""),
    sa.Column("reused", sa.Boolean, nullable=False, default=False),
    sa.Column("error", sa.Text, nullable=False, default=""),
    sa.Column("updated", sa.Float),
)


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
    """A cell this worker holds: ``token`` proves it; ``needs_run`` is the run id of the cell it
    needs; ``stale_run`` the run a dead worker left behind when this claim took its cell over."""

    key: str
    token: str
    info: dict
    failures: int
    needs_run: str = ""
    stale_run: str = ""
    lost: bool = False  # set when a heartbeat finds the cell claimed by someone else


def worker_name() -> str:
    return f"{socket.gethostname()}/{os.getpid()}"


def _first_line(exc: BaseException) -> str:
    return redact(first_line(exc, 300))


def open_engine(url: str) -> sa.Engine:
    """An engine for ``url``: ``""`` = a private in-memory SQLite database, ``sqlite:///FILE``,
    ``postgresql://…`` (psycopg 3).  Bad URL → ConfigError naming it (without its password)."""
    shown = redact(url) or "(in memory)"
    if not url:
        from sqlalchemy.pool import StaticPool

        return sa.create_engine("sqlite://", poolclass=StaticPool,
                                connect_args={"check_same_thread": False})
    try:
        parsed = sa.make_url(url)
    except Exception as exc:
        raise ConfigError(f"storage={shown!r} is not a database URL "
                          "(postgresql://user@host/db or sqlite:///file)") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return sa.create_engine(parsed, connect_args={"timeout": 60})
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return sa.create_engine(parsed, pool_pre_ping=True, pool_size=2, max_overflow=2)
    raise ConfigError(f"storage={shown!r}: grid claims need postgresql:// or sqlite:/// "
                      f"(not {backend})")


class GridClaims:
    """The cells of grid ``grid`` in the database at ``url`` (see the module docstring)."""

    def __init__(self, url: str, grid: str, *, heartbeat_s: float = 10.0, grace_s: float = 150.0,
                 retries: int = 1):
        if grace_s <= heartbeat_s:
            raise ConfigError(f"grid claims: the grace period ({grace_s} s) must exceed the "
                              f"heartbeat interval ({heartbeat_s} s)")
        self.url, self.grid = url, grid
        self.heartbeat_s, self.grace_s, self.retries = heartbeat_s, grace_s, retries
        self.engine = open_engine(url)
        self.shown = redact(url) or "(in memory)"
        if self.engine.dialect.name == "postgresql":
            self._now = sa.cast(sa.extract("epoch", sa.func.clock_timestamp()), sa.Float)
        else:  # SQLite: julian days → unix seconds (ms resolution)
            self._now = (sa.func.julianday("now") - 2440587.5) * 86400.0
        self._create_tables()

    # --- the database, through outages -----------------------------------------------------
    def _db(self, work, write: bool = True):
        """``work(conn)`` in one transaction (``write``) or connection, retried with backoff
        (1, 2, 4 … 15 s) while the database does not answer — a restart, a failover — for up to
        ``COVIDSEG_DB_OUTAGE_S`` seconds (90), then :class:`DatabaseUnavailable` in one line."""
        window = float(os.environ.get("COVIDSEG_DB_OUTAGE_S", "90"))
        deadline, wait = time.monotonic() + window, 1.0
        while True:
            try:
                with self.engine.begin() if write else self.engine.connect() as conn:
                    return work(conn)
            except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
                if time.monotonic() + wait > deadline:
                    raise DatabaseUnavailable(
                        f"storage {self.shown} has not answered for {window:.0f} s "
                        f"({_first_line(exc)}); this worker stops — its cell goes back to the "
                        "queue (or to another worker once its heartbeat is older than "
                        f"{self.grace_s:.0f} s); start it again when the database is back") \
                        from exc
                log.warning("grid %s: storage %s does not answer (%s): trying again in %.0f s",
                            self.grid, self.shown, _first_line(exc), wait)
                time.sleep(wait)
                wait = min(15.0, wait * 2)

    # --- setup ------------------------------------------------------------------------------
    def _create_tables(self) -> None:
        for attempt in range(8):  # workers starting together race to create the tables
            try:
                metadata.create_all(self.engine)
                return
            except sa.exc.SQLAlchemyError as exc:
                text = str(exc).lower()
                racing = isinstance(exc, sa.exc.IntegrityError) or any(
                    w in text for w in ("already exists", "duplicate", "database is locked"))
                if attempt == 7 or not racing:
                    raise ConfigError(f"storage {self.shown}: {_first_line(exc)}") from exc
                time.sleep(0.2 + 0.3 * attempt)

    def _insert(self, table):
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table).on_conflict_do_nothing()

    def register(self, fingerprint: str, new_cells: list[Cell]) -> None:
        """Record the grid (or check that its name means the same parameters) and insert its
        cells; a cell another worker inserted first is left as it is."""
        def record(conn):
            conn.execute(self._insert(grids).values(grid=self.grid, fingerprint=fingerprint,
                                                    created=time.time()))
            return conn.execute(sa.select(grids.c.fingerprint)
                                .where(grids.c.grid == self.grid)).scalar_one()

        known = self._db(record)
        if known != fingerprint:
            raise ConfigError(f"grid {self.grid!r} in {self.shown} was started with other "
                              "parameters: give this grid another grid_name (or the same "
                              "parameters to join it)")
        rows = [{"grid": self.grid, "cell": c.key, "position": c.position, "needs": c.needs,
                 "info": json.dumps(c.info, sort_keys=True), "state": PENDING, "token": "",
                 "failures": 0, "worker": "", "run_id": "", "reused": False, "error": ""}
                for c in new_cells]
        def insert(conn):
            for start in range(0, len(rows), 500):
                conn.execute(self._insert(cells), rows[start:start + 500])

        self._db(insert)

    def reopen_failed(self) -> int:
        """A grid that has settled (nothing pending or running) with failed cells: make them
        pending again, failures reset — a worker started on a finished grid retries what failed
        (one statement, so that workers starting together reopen them once).  Returns how many."""
        other = cells.alias("other")
        busy = sa.exists().where(other.c.grid == self.grid,
                                 other.c.state.in_((PENDING, RUNNING)))
        return self._db(lambda conn: conn.execute(
            cells.update()
            .where(cells.c.grid == self.grid, cells.c.state == FAILED, ~busy)
            .values(state=PENDING, failures=0, worker="", heartbeat=None,
                    error="retried after: " + cells.c.error, updated=self._now)).rowcount)

    # --- reading ----------------------------------------------------------------------------
    def rows(self) -> list[dict]:
        """Every cell of the grid in order, with ``age`` = seconds since its last heartbeat."""
        age = (self._now - cells.c.heartbeat).label("age")
        out = self._db(lambda conn: [dict(r._mapping) for r in conn.execute(
            sa.select(cells, age).where(cells.c.grid == self.grid).order_by(cells.c.position))],
            write=False)
        for r in out:
            r["info"] = json.loads(r["info"])
        return out

    def counts(self) -> dict[str, int]:
        states = [r["state"] for r in self.rows()]
        return {s: states.count(s) for s in (PENDING, RUNNING, DONE, FAILED)}

    def settled(self) -> bool:
        """Every cell done or failed (none pending or running)."""
        c = self.counts()
        return c[PENDING] == 0 and c[RUNNING] == 0

    # --- claiming ---------------------------------------------------------------------------
    def _stale(self, row: dict) -> bool:
        return row["state"] == RUNNING and row["age"] is not None and row["age"] > self.grace_s

    def _set_if(self, conn, row: dict, values: dict):
        """UPDATE the cell only if nobody claimed it since ``row`` was read: same token, and
        still free (pending, or running with a stale heartbeat).  Returns the row count."""
        stale = sa.and_(cells.c.state == RUNNING, cells.c.heartbeat < self._now - self.grace_s)
        free = sa.or_(cells.c.state == PENDING, stale)
        return conn.execute(
            cells.update()
            .where(cells.c.grid == self.grid, cells.c.cell == row["cell"],
                   cells.c.token == row["token"], free)
            .values(**values, updated=self._now)).rowcount

    def claim(self, worker: str | None = None) -> Claim | None:
        """The first free cell (pending, or stale) whose needed cell is done, now held by
        ``worker``; None when no cell is free now (others may still be running)."""
        worker = worker or worker_name()
        rows = self.rows()
        by_key = {r["cell"]: r for r in rows}
        for row in rows:
            stale = self._stale(row)
            if row["state"] != PENDING and not stale:
                continue
            needed = by_key.get(row["needs"]) if row["needs"] else None
            if needed is not None and needed["state"] not in (DONE, FAILED):
                continue  # its pretrain cell is still running: later
            failures = row["failures"] + (1 if stale else 0)
            error = f"worker {row['worker']} stopped sending heartbeats" if stale else row["error"]
            token = uuid.uuid4().hex
            if needed is not None and needed["state"] == FAILED:
                self._db(lambda conn, row=row, token=token, needed=needed: self._set_if(
                    conn, row, {"state": FAILED, "token": token,
                                "error": f"needs {needed['cell']}, which failed"}))
                continue
            if failures > self.retries:
                self._db(lambda conn, row=row, token=token, failures=failures, error=error:
                         self._set_if(conn, row, {"state": FAILED, "token": token,
                                                  "failures": failures, "error": error}))
                continue
            won = self._db(lambda conn, row=row, token=token, failures=failures, error=error:
                           self._set_if(conn, row, {"state": RUNNING, "token": token,
                                                    "worker": worker, "heartbeat": self._now,
                                                    "failures": failures, "error": error,
                                                    "run_id": ""}))
            if won == 1:
                if stale:
                    log.warning("grid %s: cell %s taken over from %s (no heartbeat for %.0f s)",
                                self.grid, row["cell"], row["worker"], row["age"])
                return Claim(row["cell"], token, row["info"], failures,
                             needs_run=needed["run_id"] if needed is not None else "",
                             stale_run=row["run_id"] if stale else "")
        return None

    # --- the holder's updates ---------------------------------------------------------------
    def _update_held(self, claim: Claim, values: dict) -> bool:
        n = self._db(lambda conn: conn.execute(
            cells.update()
            .where(cells.c.grid == self.grid, cells.c.cell == claim.key,
                   cells.c.token == claim.token, cells.c.state == RUNNING)
            .values(**values, updated=self._now)).rowcount)
        if n != 1:
            claim.lost = True
        return n == 1

    def heartbeat(self, claim: Claim) -> bool:
        """Refresh the claim; False when another worker has taken the cell over."""
        return self._update_held(claim, {"heartbeat": self._now})

    def started(self, claim: Claim, run_id: str) -> bool:
        """Record the run the claim's work goes into (so that a worker taking over a dead
        worker's cell can close the run it left behind)."""
        return self._update_held(claim, {"run_id": run_id, "heartbeat": self._now})

    def finish(self, claim: Claim, run_id: str, reused: bool = False) -> bool:
        """The cell is done (``run_id``); False when the claim had been lost meanwhile."""
        return self._update_held(claim, {"state": DONE, "run_id": run_id, "reused": reused,
                                         "heartbeat": self._now})

    def fail(self, claim: Claim, error: str) -> str:
        """Count a failure of the cell: back to pending while failures ≤ retries, else failed.
        Returns the cell's new state ('' when the claim had been lost)."""
        failures = claim.failures + 1
        state = PENDING if failures <= self.retries else FAILED
        ok = self._update_held(claim, {"state": state, "failures": failures, "worker": "",
                                       "error": redact(" ".join(str(error).split()))[:2000]})
        return state if ok else ""

    def release(self, claim: Claim) -> bool:
        """Give the cell back without counting a failure (this worker was stopped)."""
        return self._update_held(claim, {"state": PENDING, "worker": "", "heartbeat": None})

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
                    log.warning("grid %s: heartbeat failed: %s", self.grid, _first_line(exc))

        thread = threading.Thread(target=beat, name=f"grid-heartbeat-{claim.key}", daemon=True)
        thread.start()
        try:
            yield claim
        finally:
            stop.set()
            thread.join(timeout=self.heartbeat_s + 30)

    def close(self) -> None:
        self.engine.dispose()
