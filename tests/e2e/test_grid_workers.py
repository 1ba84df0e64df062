"""``grid`` workers sharing one grid through PostgreSQL: two workers started together split the
cells (the pretrain cell too) with none done twice, take over a dead worker's cell, and each
parent run logs the whole table; no logged value holds the database password."""

import subprocess
from pathlib import Path

import pytest

from covidseg.config import GridConfig
from covidseg.stages.gridstudy import DONE, Cell, GridStudy
from tests.conftest import subprocess_env

GRID = {"archs": "unet", "strategies": "scratch,decoder", "inits": "restoration",
        "regimes": "10-40", "folds": "0,1", "pretrain_epochs": 1, "epochs": 1,
        "iterations_per_epoch": 10, "encoder": "resnet18", "workers": 0,
        "lr": 0.002}  # not the other grid tests' cells (a FINISHED twin would be reused)
SECRET = "Gr1dS3cretPw"


def test_two_grid_workers_on_one_postgresql_database_split_the_cells(tracking_uri, preprocess_run,
                                                                     postgres, tmp_path):
    from mlflow.tracking import MlflowClient

    from covidseg.stages.grid import grid_fingerprint, plan_cells

    # the throw-away cluster trusts local connections: the password only has to stay unlogged
    storage = postgres("grid_workers").replace("postgresql://postgres@",
                                               f"postgresql://postgres:{SECRET}@")
    client = MlflowClient(tracking_uri)
    exp = client.create_experiment("grid-workers")
    # a worker that died in the middle of a cell: its claim is stale, its run left RUNNING
    cfg = GridConfig(data=preprocess_run, **GRID)
    name = f"grid-{grid_fingerprint(cfg)[:16]}"
    dead = GridStudy(storage, name)
    dead.register(grid_fingerprint(cfg), plan_cells(cfg))
    claim = dead.claim("dead-host/1")
    assert claim.key == "pretrain/restoration/unet"
    orphan = client.create_run(exp, run_name="orphan").info.run_id
    dead.started(claim, orphan)
    dead.close()

    args = ["covidseg", "grid", "--data", preprocess_run, "--experiment", "grid-workers",
            *[x for k, v in GRID.items() for x in (f"--{k}", str(v))]]
    env = subprocess_env(MLFLOW_TRACKING_URI=tracking_uri, OMP_NUM_THREADS=1,
                         COVIDSEG_GRID_HEARTBEAT_S=1, COVIDSEG_GRID_GRACE_S=4)
    # one worker given the URL as a parameter, the other through the environment
    workers = [subprocess.Popen(args + ["--storage", storage], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, encoding="utf-8",
                                errors="replace"),
               subprocess.Popen(args, cwd=tmp_path, env={**env, "COVIDSEG_GRID_STORAGE": storage},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, encoding="utf-8",
                                errors="replace")]
    outputs = [w.communicate(timeout=900) for w in workers]
    for w, (out, err) in zip(workers, outputs):
        assert w.returncode == 0, err[-3000:]
        assert SECRET not in out + err

    runs = client.search_runs([exp])
    parents = [r for r in runs if r.data.tags.get("covidseg.entry_point") == "grid"]
    assert len(parents) == 2
    finished = [r for r in runs if r.info.status == "FINISHED"]
    finetunes = [r for r in finished if r.data.tags.get("covidseg.entry_point") == "finetune"]
    keys = [r.data.tags["covidseg.grid_key"] for r in finetunes]
    assert len(keys) == 4 and len(set(keys)) == 4, "a cell was done twice"
    pretrains = [r for r in finished if r.data.tags.get("covidseg.entry_point") == "pretrain"]
    assert len(pretrains) == 1
    # the dead worker's cell was taken over, its orphan run closed as FAILED
    assert client.get_run(orphan).info.status == "FAILED"
    assert "stopped sending heartbeats" in client.get_run(orphan).data.tags["covidseg.error"]
    rows = {r["cell"]: r for r in GridStudy(storage, name).rows()}
    assert {r["state"] for r in rows.values()} == {DONE}
    assert rows["pretrain/restoration/unet"]["failures"] == 1
    assert rows["pretrain/restoration/unet"]["run_id"] == pretrains[0].info.run_id
    # the decoder cells start from that one pretrain run
    assert {r.data.tags["covidseg.source.init"] for r in finetunes
            if r.data.params["strategy"] == "decoder"} == {pretrains[0].info.run_id}
    # both workers trained cells, nested under their own parents; together all five, once
    children = {p.info.run_id: [r for r in finished
                                if r.data.tags.get("mlflow.parentRunId") == p.info.run_id]
                for p in parents}
    assert all(children.values()), {k: len(v) for k, v in children.items()}
    assert sum(len(v) for v in children.values()) == 5
    # each parent logs the whole table
    tables = []
    for p in parents:
        m = client.get_run(p.info.run_id).data.metrics
        assert m["runs"] == 4 and m["cells"] == 2 and m["reused"] == 0 and m["failed"] == 0
        assert m["ran_here"] == len(children[p.info.run_id])
        assert p.data.tags["covidseg.grid"] == name
        assert p.data.tags["covidseg.grid_storage"].startswith("postgresql://postgres:***@")
        tables.append(Path(client.download_artifacts(p.info.run_id, "grid/table.csv",
                                                     str(tmp_path / p.info.run_id))).read_text())
    assert tables[0] == tables[1] and len(tables[0].splitlines()) == 3
    # no parameter or tag of any run holds the password
    for r in runs:
        assert not [v for v in (*r.data.params.values(), *r.data.tags.values()) if SECRET in v]


def test_the_workers_role_owns_the_study_database_and_cannot_open_mlflows(postgres, tmp_path):
    """docker/initdb/20-worker-role.sh (what the compose server runs on its first start, and an
    existing server runs once) on a real PostgreSQL: the workers' role owns the Optuna database —
    tables an older server made there included — and holds grid claims and studies in it, but may
    not connect to MLflow's backend store; run twice, it changes nothing."""
    import uuid

    import optuna
    import psycopg
    import sqlalchemy as sa

    from tests.conftest import REPO

    tag = uuid.uuid4().hex[:6]
    mlflow_url = postgres(f"mlflow_{tag}")
    base, mlflow_db = mlflow_url.rsplit("/", 1)
    host_port = base.split("@", 1)[1]
    env = subprocess_env(PGHOST=host_port.split(":")[0], PGPORT=host_port.split(":")[1],
                         POSTGRES_USER=base.split("//", 1)[1].split("@")[0].split(":")[0],
                         POSTGRES_DB=mlflow_db, OPTUNA_DB=f"optuna_{tag}",
                         WORKER_DB_USER=f"worker_{tag}", WORKER_DB_PASSWORD="it's a \"secret\"")
    initdb = REPO / "docker" / "initdb"
    r = subprocess.run(["sh", str(initdb / "10-optuna-db.sh")], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    with psycopg.connect(f"{base}/optuna_{tag}", autocommit=True) as conn:  # an older table
        conn.execute("CREATE TABLE old_studies (id serial PRIMARY KEY)")
    for _ in range(2):
        r = subprocess.run(["sh", str(initdb / "20-worker-role.sh")], env=env, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "secret" not in r.stdout + r.stderr
    worker = f"postgresql://worker_{tag}@{host_port}"
    engine = sa.create_engine(f"{worker.replace('postgresql://', 'postgresql+psycopg://')}/optuna_{tag}")
    with engine.connect() as conn:
        owners = dict(conn.execute(sa.text("SELECT tablename, tableowner FROM pg_tables "
                                           "WHERE schemaname = 'public'")).all())
        conn.execute(sa.text("INSERT INTO old_studies DEFAULT VALUES"))  # its sequence moved too
        conn.commit()
    engine.dispose()
    assert owners == {"old_studies": f"worker_{tag}"}
    claims = GridStudy(f"{worker}/optuna_{tag}", "g")
    claims.register("fp", [Cell("c0", 0)])
    assert claims.claim("w").key == "c0"
    claims.close()
    optuna.create_study(storage=f"{worker}/optuna_{tag}", study_name="s").optimize(
        lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        psycopg.connect(f"{worker}/{mlflow_db}").close()


def test_a_failing_cell_is_retried_once_then_recorded_and_named(tracking_uri, preprocess_run,
                                                                tmp_path):
    """A shared grid (here an SQLite file) whose only cell cannot run (its init is a run that
    does not exist): tried twice, recorded as failed with its error, the worker's parent run logs
    the runs table and the command ends with one line naming the cell."""
    from mlflow.tracking import MlflowClient

    missing = "0" * 32
    storage = f"sqlite:///{tmp_path / 'grid.db'}"
    args = ["covidseg", "grid", "--data", preprocess_run, "--experiment", "grid-failing",
            "--archs", "unet", "--strategies", "decoder", "--inits", missing, "--regimes", "10-40",
            "--folds", "0", "--epochs", "1", "--iterations_per_epoch", "4", "--encoder",
            "resnet18", "--workers", "0", "--storage", storage]
    r = subprocess.run(args, cwd=tmp_path, capture_output=True, encoding="utf-8",
                       errors="replace", timeout=600,
                       env=subprocess_env(MLFLOW_TRACKING_URI=tracking_uri, OMP_NUM_THREADS=1))
    assert r.returncode == 2, r.stderr[-3000:]
    last = [ln for ln in r.stderr.splitlines() if ln.strip()][-1]
    assert last.startswith("covidseg grid: error: grid grid-") and "1 cell(s) failed" in last
    assert f"finetune/unet/{missing}/decoder/10-40/fold0" in last and "Traceback" not in r.stderr
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("grid-failing").experiment_id])
    parent = next(x for x in runs if x.data.tags.get("covidseg.entry_point") == "grid")
    assert parent.info.status == "FAILED" and parent.data.metrics["failed"] == 1
    cells = [x for x in runs if x.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(cells) == 2 and {x.info.status for x in cells} == {"FAILED"}  # tried twice
    table = Path(client.download_artifacts(parent.info.run_id, "grid/runs.csv", str(tmp_path)))
    assert "failed" in table.read_text()
    (row,) = GridStudy(storage, parent.data.tags["covidseg.grid"]).rows()
    assert row["state"] == "failed" and row["failures"] == 2 and row["error"]


@pytest.mark.e2e  # starts PostgreSQL, an mlflow server and a grid worker itself
def test_a_grid_worker_rides_out_a_20_s_postgresql_stop(tmp_path):
    """PostgreSQL holds both MLflow's store and the grid's claims, and stops for 20 s while a cell
    trains (a restart, a failover): MLflow's calls and the claims are retried, the worker
    finishes every cell, no traceback, no cell left running."""
    import re
    import shutil
    import time
    import uuid

    from tests.conftest import TINY_DEMO, MlflowServer, Postgres, _pg_bin, run

    if not (_pg_bin("initdb") and _pg_bin("pg_ctl")):
        pytest.skip("no PostgreSQL binaries")
    root = Path("/tmp") / f"covidseg-pg-{uuid.uuid4().hex[:8]}"
    pg = Postgres(root).start()
    server = None
    try:
        server = MlflowServer(tmp_path / "server", backend_store_uri=pg.create_db("mlflow"))
        server.start()
        storage = pg.create_db("claims")
        r = run(["covidseg", "preprocess", *[f"--{k}={v}" for k, v in TINY_DEMO.items()]],
                tmp_path, MLFLOW_TRACKING_URI=server.uri)
        assert r.returncode == 0, r.stderr[-2000:]
        data = re.search(r"run_id=([0-9a-f]{32})", r.stdout).group(1)
        args = ["covidseg", "grid", "--data", data, "--experiment", "grid-outage", "--archs",
                "unet", "--strategies", "scratch", "--regimes", "10-40",
                "--folds", "0,1", "--epochs", "6", "--iterations_per_epoch", "4", "--encoder",
                "resnet18", "--workers", "0", "--storage", storage]
        worker = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, encoding="utf-8", errors="replace",
                                  env=subprocess_env(MLFLOW_TRACKING_URI=server.uri,
                                                     COVIDSEG_GRID_HEARTBEAT_S=1))
        claims = GridStudy(storage, "unused")
        deadline = time.time() + 300
        while time.time() < deadline and worker.poll() is None:
            states = [t.state.name for study in claims.storage.get_all_studies()
                      for t in claims.storage.get_all_trials(study._study_id, deepcopy=False)]
            if "RUNNING" in states:
                break
            time.sleep(0.5)
        claims.close()
        assert worker.poll() is None and "RUNNING" in states, "no cell started"
        time.sleep(2)  # inside the cell's training
        pg.stop()
        time.sleep(20)
        pg.start()  # the same cluster, port and data
        out, err = worker.communicate(timeout=900)
        assert worker.returncode == 0, err[-3000:]
        assert "Traceback" not in err
        assert "does not answer" in err  # the outage was met, and waited out
        rows = GridStudy(storage, re.search(r"grid=(grid-\w+)", out).group(1)).rows()
        assert len(rows) == 2 and {r["state"] for r in rows} == {DONE}
    finally:
        if server is not None:
            server.stop()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
