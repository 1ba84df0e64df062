"""The group server under load: ``--writers`` concurrent clients against the compose server's
``mlflow server`` command on PostgreSQL, for each ``--workers`` count.

    python benchmarks/server_load.py                       # 20 writers, 60 s, workers 1,2,4
    python benchmarks/server_load.py --writers 8 --seconds 10 --workers 1,2   # a quick look

A throw-away PostgreSQL cluster (the local binaries; or ``--postgres URL`` of a server whose user
may create databases) gets one fresh database per ``--workers`` value, and a local ``mlflow
server`` runs on it with the command ``docker-compose.yml`` runs (artifacts served).  Each writer
is its own process with MLflow's client (retries as covidseg sets them) and, until the time is
up, repeats: create a run, log 3 params and a batch of 10 metrics, log one 4 kB artifact, end the
run.  Every call's latency is recorded, and every error that remains after the client's retries.
Then every run is read back: the params, metric values and artifacts that landed are counted
against those sent.  Printed per ``--workers``: operations per second, p50/p95 latency, the error
rate and the values lost; RATIOS compares each worker count's throughput with one worker's.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench import header, ratios, table

METRICS_PER_RUN, PARAMS_PER_RUN = 10, 3


def writer(uri: str, experiment_id: str, seconds: float, seed: int, out) -> None:
    """One client: runs until ``seconds`` are up; puts (latencies, errors, sent runs) on ``out``
    (errors: the first line of each exception left after the client's retries → its count)."""
    os.environ["MLFLOW_TRACKING_URI"] = uri
    sys.stdout = open(os.devnull, "w")  # MLflow prints a "View run" line for every ended run
    from covidseg.tracking.client import configure_http

    configure_http()
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client, latencies, errors, runs = MlflowClient(uri), [], {}, []
    blob = Path(tempfile.mkdtemp()) / "note.txt"
    blob.write_text("x" * 4096)
    end = time.time() + seconds
    while time.time() < end:
        try:
            t0 = time.perf_counter()
            run_id = client.create_run(experiment_id).info.run_id
            t1 = time.perf_counter()
            now = int(time.time() * 1000)
            client.log_batch(run_id, params=[Param(f"p{i}", str(seed)) for i in
                                             range(PARAMS_PER_RUN)],
                             metrics=[Metric("loss", float(i), now, i) for i in
                                      range(METRICS_PER_RUN)])
            t2 = time.perf_counter()
            client.log_artifact(run_id, str(blob))
            t3 = time.perf_counter()
            client.set_terminated(run_id)
            t4 = time.perf_counter()
            latencies += [t1 - t0, t2 - t1, t3 - t2, t4 - t3]
            runs.append(run_id)
        except Exception as exc:  # what is left after the client's retries
            line = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:160]}"
            errors[line] = errors.get(line, 0) + 1
    shutil.rmtree(blob.parent, ignore_errors=True)
    out.put((latencies, errors, runs))


def count_back(uri: str, runs: list[str]) -> tuple[int, int, int]:
    """(params, metric values, artifacts) found of the ``runs``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    params = metrics = artifacts = 0
    for run_id in runs:
        run = client.get_run(run_id)
        params += len(run.data.params)
        metrics += len(client.get_metric_history(run_id, "loss"))
        artifacts += len(client.list_artifacts(run_id))
    return params, metrics, artifacts


def one_config(workers: int, args, db_url: str) -> dict:
    from mlflow.tracking import MlflowClient

    from covidseg.tracking.local_server import LocalServer

    root = Path(tempfile.mkdtemp(prefix="covidseg-load-"))
    server = LocalServer(root, backend_store_uri=db_url, workers=workers).start()
    try:
        exp = MlflowClient(server.uri).create_experiment(f"load-{workers}")
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        procs = [ctx.Process(target=writer, args=(server.uri, exp, args.seconds, i, out))
                 for i in range(args.writers)]
        t0 = time.time()
        for p in procs:
            p.start()
        results = [out.get(timeout=args.seconds + 600) for _ in procs]
        for p in procs:
            p.join(60)
        wall = time.time() - t0
        latencies = sorted(x for r in results for x in r[0])
        messages = {}
        for r in results:
            for line, n in r[1].items():
                messages[line] = messages.get(line, 0) + n
        errors = sum(messages.values())
        runs = [x for r in results for x in r[2]]
        found = count_back(server.uri, runs)
        sent = (len(runs) * PARAMS_PER_RUN, len(runs) * METRICS_PER_RUN, len(runs))
        ops = len(latencies)
        return {"workers": workers, "runs": len(runs), "ops_per_s": ops / wall,
                "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
                "p95_ms": 1000 * latencies[int(0.95 * (ops - 1))] if latencies else float("nan"),
                "error_rate": errors / max(1, errors + len(runs)),  # of create-log-end passes
                "values_lost": sum(s - f for s, f in zip(sent, found)),
                "errors": messages}
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--writers", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--workers", default="1,2,4", help="mlflow server --workers values to try")
    ap.add_argument("--postgres", default="", help="a PostgreSQL server URL whose user may "
                                                   "create databases (default: a throw-away "
                                                   "cluster from the local binaries)")
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    import torch

    header("the group server under load (mlflow server on PostgreSQL, concurrent writers)",
           torch.device("cpu"), writers=args.writers, seconds=args.seconds, workers=counts)
    pg, rows = None, []
    try:
        if args.postgres:
            import psycopg

            base = args.postgres.rsplit("/", 1)[0]

            def create(name):
                with psycopg.connect(args.postgres, autocommit=True) as conn:
                    conn.execute(f'CREATE DATABASE "{name}"')
                return f"{base}/{name}"
        else:
            from covidseg.tracking.local_server import LocalPostgres

            pg = LocalPostgres(Path("/tmp") / f"covidseg-pg-{uuid.uuid4().hex[:8]}").start()
            create = pg.create_db
        for w in counts:
            rows.append(one_config(w, args, create(f"load_{w}_{uuid.uuid4().hex[:6]}")))
            for line, n in rows[-1].pop("errors").items():
                print(f"workers {w}: {n} × {line}")
            table(rows[-1:])
    finally:
        if pg is not None:
            pg.stop()
            shutil.rmtree(pg.root, ignore_errors=True)
    print()
    table(rows)
    base = rows[0]["ops_per_s"]
    ratios(**{f"ops_workers{r['workers']}_over_workers{rows[0]['workers']}":
              r["ops_per_s"] / base for r in rows},
           **{f"values_lost_workers{r['workers']}": float(r["values_lost"]) for r in rows})


if __name__ == "__main__":
    main()
