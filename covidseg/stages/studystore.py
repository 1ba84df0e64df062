"""Optuna storages that workers on several machines share, and calls to them through database
outages.  ``sqlite:///`` storages open every transaction ``BEGIN IMMEDIATE``: Optuna pops an
enqueued trial by reading it ``FOR UPDATE`` and writing RUNNING, which SQLite ignores and pysqlite
reads outside a transaction — 6 threads popped 5-11 of 100 trials twice (Optuna 5.1), none with
``BEGIN IMMEDIATE`` (one transaction at a time).  PostgreSQL locks the row and needs nothing."""

from __future__ import annotations

import logging
import os
import time
import warnings

import optuna
import sqlalchemy as sa

from covidseg.base.errors import ConfigError, DatabaseUnavailable, first_line
from covidseg.base.redact import redact

log = logging.getLogger("covidseg.studystore")

TRANSIENT = (optuna.exceptions.StorageInternalError, sa.exc.OperationalError,
             sa.exc.InterfaceError)


def one_line(exc: BaseException) -> str:
    return redact(first_line(exc, 300))


def open_storage(url: str, heartbeat_s: float, grace_s: float, retries: int):
    """Optuna storage for ``url``: ``""`` = memory, ``sqlite:///FILE`` (every transaction
    ``BEGIN IMMEDIATE``), ``postgresql://…`` (psycopg 3).  Bad URL → ConfigError naming it
    (without its password)."""
    if not url:
        return optuna.storages.InMemoryStorage()
    shown = redact(url)
    try:
        parsed = sa.make_url(url)
    except Exception as exc:
        raise ConfigError(f"storage={shown!r} is not a database URL "
                          "(postgresql://user@host/db or sqlite:///file)") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        engine = {"connect_args": {"timeout": 60, "isolation_level": None}}
    elif backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        engine = {"pool_pre_ping": True, "pool_size": 2, "max_overflow": 2}
    else:
        raise ConfigError(f"storage={shown!r}: shared studies need postgresql:// or sqlite:/// "
                          f"(not {backend})")
    for attempt in range(8):  # workers starting together race to create the tables
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(
                    parsed.render_as_string(hide_password=False), engine_kwargs=engine,
                    heartbeat_interval=heartbeat_s, grace_period=grace_s,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=retries))
            break
        except Exception as exc:
            text = str(exc).lower()
            racing = any(w in text for w in ("already exists", "duplicate", "database is locked",
                                             "unique constraint"))
            if attempt == 7 or not racing:
                raise ConfigError(f"storage {shown}: {one_line(exc)}") from exc
            time.sleep(0.2 + 0.3 * attempt)
    if backend == "sqlite":
        sa.event.listen(storage.engine, "begin",
                        lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
    return storage


def open_study(storage, name: str, pruner=None):
    """The study ``name`` (maximised, with ``pruner``), created by the first worker, loaded by the
    others; a storage that refuses (no rights, a locked or resetting database) is one line."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for attempt in range(8):  # workers creating the study together: load the winner's
        try:
            return optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                       pruner=pruner, load_if_exists=True)
        except optuna.exceptions.DuplicatedStudyError:
            if attempt == 7:
                raise ConfigError(f"study {name!r}: other workers kept creating it") from None
            time.sleep(0.2 + 0.3 * attempt)
        except (sa.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
            raise ConfigError(f"study {name!r} on {shown_url(storage)}: {one_line(exc)}") \
                from exc


def shown_url(storage) -> str:
    """The storage's URL without its password (``memory`` for an in-memory one)."""
    engine = getattr(storage, "engine", None)
    return redact(engine.url.render_as_string(hide_password=True)) if engine else "memory"


def through_outages(shown: str, then: str, work, *args, **kwargs):
    """``work(*args, **kwargs)``, retried with backoff (1, 2, 4 … 15 s) while the database
    ``shown`` does not answer — a restart, a failover — for up to ``COVIDSEG_DB_OUTAGE_S``
    seconds (90), then :class:`DatabaseUnavailable` in one line (``then``: what happens to the
    worker's work)."""
    window = float(os.environ.get("COVIDSEG_DB_OUTAGE_S", "90"))
    deadline, wait = time.monotonic() + window, 1.0
    while True:
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return work(*args, **kwargs)
        except TRANSIENT as exc:
            if time.monotonic() + wait > deadline:
                raise DatabaseUnavailable(
                    f"storage {shown} has not answered for {window:.0f} s ({one_line(exc)}); "
                    f"this worker stops — {then}; start it again when the database is back") \
                    from exc
            log.warning("storage %s does not answer (%s): trying again in %.0f s", shown,
                        one_line(exc), wait)
            time.sleep(wait)
            wait = min(15.0, wait * 2)
