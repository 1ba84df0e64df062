"""Shared fixtures: an isolated cache, small phantom files, and a real ``mlflow server``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Under pytest-xdist (the test command runs a worker per core plus one, up to 4) the cores are
# shared:
# each worker and the processes it starts use cores / workers threads, set before torch loads.
# Two 2-thread processes on 2 cores ran a training subset 1.5x slower than one 1-thread process
# per core (benchmarks aside, tests never time anything).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
if _WORKERS:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))

import pytest  # noqa: E402

# one throw-away server implementation for tests and benchmarks
from covidseg.tracking.local_server import LocalServer as MlflowServer  # noqa: E402
from covidseg.tracking.local_server import free_port  # noqa: E402, F401  (tests import it here)

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = str(Path(sys.executable).parent)

# The folder is the marker: every test under tests/e2e/ is ``e2e`` (it starts real processes — an
# `mlflow server`, `mlflow run` / covidseg / torchrun subprocesses, benchmark scripts, PostgreSQL,
# Chromium — or runs whole multi-epoch trainings); tests/unit/ mirrors covidseg/ and starts none.
# A unit test that uses one of these process-starting fixtures or carries @pytest.mark.e2e is a
# collection error, so `pytest -m "not e2e"` and `pytest tests/unit` are the same tests.
E2E_FIXTURES = frozenset({"mlflow_server", "tracking_uri", "preprocess_run", "postgres"})
TESTS = Path(__file__).resolve().parent


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker more than cores (at most 4) — much of an end-to-end test is waiting
    for a subprocess or a server to start, when another worker can use the core."""
    return min(4, (os.cpu_count() or 1) + 1)


def misplaced(item) -> str | None:
    """Why ``item`` is in the wrong folder (None if it is not); under tests/e2e/ marks it e2e."""
    folder = Path(item.path).resolve().relative_to(TESTS).parts[0]
    if folder == "e2e":
        item.add_marker(pytest.mark.e2e)
        return None
    if folder != "unit":
        return f"{item.nodeid}: a test lives under tests/unit/ or tests/e2e/"
    if item.get_closest_marker("e2e") or E2E_FIXTURES & set(item.fixturenames):
        return f"{item.nodeid}: starts processes (e2e), so it belongs in tests/e2e/"
    return None


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    """The folder marks the tests it holds; a misplaced test fails its module's collection (an
    error reported as such with or without xdist workers)."""
    report = yield
    wrong = [w for x in report.result or () if isinstance(x, pytest.Item) and (w := misplaced(x))]
    if wrong:
        report.outcome, report.longrepr, report.result = "failed", "\n".join(wrong), []
    return report


# tiny demo cohort used by the end-to-end tests (64 px, a handful of cases)
TINY_DEMO = {"demo_labelled": 6, "demo_unlabelled": 3, "demo_noncovid": 2, "demo_size": 64,
             "demo_depth": 24, "test_cases": 2, "folds": 2}


@pytest.fixture(scope="session", autouse=True)
def isolated_env(tmp_path_factory):
    """Every test session gets its own cache and no tracking server unless a test asks."""
    cache = tmp_path_factory.mktemp("covidseg-cache")
    saved = {k: os.environ.get(k) for k in ("COVIDSEG_CACHE", "MLFLOW_TRACKING_URI",
                                            "NO_ALBUMENTATIONS_UPDATE", "MLFLOW_RUN_ID")}
    os.environ["COVIDSEG_CACHE"] = str(cache)
    os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("MLFLOW_RUN_ID", None)
    yield cache
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` (sqlite backend, served artifacts) on a free loopback port."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    yield server
    server.stop()


@pytest.fixture
def tracking_uri(mlflow_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    import mlflow

    mlflow.set_tracking_uri(mlflow_server.uri)
    yield mlflow_server.uri
    mlflow.set_tracking_uri(None) if hasattr(mlflow, "set_tracking_uri") else None


def subprocess_env(**extra) -> dict:
    """Environment for child processes: this venv first on PATH, the session's cache."""
    env = {**os.environ, **{k: str(v) for k, v in extra.items()}}
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
    env.pop("MLFLOW_RUN_ID", None)
    return env


@pytest.fixture(scope="session")
def phantom_files(tmp_path_factory):
    """A few small phantom volumes as NIfTI (HU), with infection and lung masks."""
    from covidseg.data.phantom import make_phantom, write_phantom

    root = tmp_path_factory.mktemp("phantoms")
    cases = []
    for i, centre in enumerate(["A", "B", "A", "D"]):
        ph = make_phantom(100 + i, size=64, depth_mm=24, kind="covid", centre=centre)
        img, inf, lung = (root / d / f"case_{i}.nii.gz" for d in ("images", "masks", "lungs"))
        write_phantom(ph, img, inf, lung)
        cases.append({"image": img, "infection": inf, "lung": lung, "phantom": ph})
    return root, cases


# --- training-chain helpers: a tiny preprocess run on the session's server, `mlflow run` -----
# small, quick training runs: a few optimiser steps an epoch (not the plan's 50), full lr at once
FAST = {"encoder": "resnet18", "batch_size": 8, "workers": 0, "iterations_per_epoch": 6,
        "warmup": 0}


def run(cmd, cwd, **env):
    return subprocess.run(cmd, cwd=cwd, env=subprocess_env(**env), capture_output=True,
                          encoding="utf-8", errors="replace", timeout=900)


def mlflow_run(entry, params: dict, cwd, uri, experiment):
    """``mlflow run . -e entry`` against ``uri``; returns the run id (asserts success)."""
    import re

    args = [x for k, v in params.items() for x in ("-P", f"{k}={v}")]
    r = run([sys.executable, "-m", "mlflow", "run", str(REPO), "-e", entry, "--env-manager",
             "local", "--experiment-name", experiment, *args], cwd, MLFLOW_TRACKING_URI=uri)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    m = re.search(r"Run \(ID '([0-9a-f]{32})'\) succeeded", r.stdout + r.stderr)
    assert m, r.stderr[-3000:]
    return m.group(1)


@pytest.fixture(scope="session")
def preprocess_run(mlflow_server, tmp_path_factory):
    """A preprocess run of the tiny demo cohort on the session's server (its run id)."""
    import re

    r = run(["covidseg", "preprocess", *[f"--{k}={v}" for k, v in TINY_DEMO.items()],
             "--experiment=chain"], tmp_path_factory.mktemp("pre"),
            MLFLOW_TRACKING_URI=mlflow_server.uri)
    assert r.returncode == 0, r.stderr[-3000:]
    return re.search(r"run_id=([0-9a-f]{32})", r.stdout).group(1)


# --- a real PostgreSQL (the group server's backend store): covidseg.tracking.local_server ----
from covidseg.tracking.local_server import LocalPostgres as Postgres  # noqa: E402
from covidseg.tracking.local_server import pg_bin as _pg_bin  # noqa: E402


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    """URL maker for databases on a real PostgreSQL: ``COVIDSEG_TEST_POSTGRES_URL`` (a server
    URL whose user may create databases) or a throw-away cluster from the local binaries."""
    import uuid

    url = os.environ.get("COVIDSEG_TEST_POSTGRES_URL")
    if url:
        import psycopg

        base = url.rsplit("/", 1)[0]

        def create(name):
            name = f"{name}_{uuid.uuid4().hex[:6]}"
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            return f"{base}/{name}"

        yield create
        return
    if not (_pg_bin("initdb") and _pg_bin("pg_ctl")):
        pytest.skip("no PostgreSQL: install the Debian package `postgresql` or set "
                    "COVIDSEG_TEST_POSTGRES_URL")
    root = Path("/tmp") / f"covidseg-pg-{uuid.uuid4().hex[:8]}"  # short socket path
    pg = Postgres(root).start()
    try:
        yield pg.create_db
    finally:
        pg.stop()
        import shutil

        shutil.rmtree(root, ignore_errors=True)
