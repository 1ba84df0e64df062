"""``torchrun --standalone --nproc_per_node=2 -m covidseg finetune`` on the CPU (gloo) against a
real ``mlflow server``: one MLflow run per job, its world size, equal replicas, and a killed
2-process run resumed by 2 processes (and refused, with one line, by 1).

Why the weights of this run are not compared with a single process here: the U-Net's BatchNorm
layers normalise each rank's batch of 4 slices with that batch's statistics, where one process
with a batch of 8 uses the statistics of all 8 (PyTorch's SyncBatchNorm runs on CUDA only:
``sync_bn=true`` there).  tests/e2e/test_distributed.py shows the equality that must hold
without batch statistics: two ranks through the same loop and DDP give one process's weights for
the same global batch.  Here what must hold is checked: every rank's replica is equal (DDP), the
run records ``world_size`` 2 and the global batch, each epoch is logged once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import run, subprocess_env

pytestmark = pytest.mark.e2e

TORCHRUN = ["torchrun", "--standalone", "--nproc_per_node=2", "-m", "covidseg", "finetune"]
TINY = ["--encoder", "resnet18", "--batch_size", "4", "--workers", "0", "--patience", "0",
        "--checkpoint_every", "0", "--overlays", "0", "--iterations_per_epoch", "4", "--warmup",
        "0"]


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants (torchrun starts its ranks in sessions of their
    own: killing its process group would leave them running)."""
    import psutil

    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(procs[1:], timeout=30)  # the ranks; the caller reaps torchrun itself


def _runs(client, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def test_two_processes_make_one_run(tracking_uri, preprocess_run, tmp_path):
    client = MlflowClient(tracking_uri)
    r = run([*TORCHRUN, "--data", preprocess_run, "--epochs", "2", *TINY,
             "--experiment", "ddp"], tmp_path, MLFLOW_TRACKING_URI=tracking_uri)
    assert r.returncode == 0, r.stderr[-4000:]
    runs = _runs(client, "ddp")
    assert len(runs) == 1  # rank 1 never opened a run
    info = runs[0]
    assert info.info.status == "FINISHED"
    assert info.data.params["world_size"] == "2"
    assert info.data.params["effective_batch_size"] == "8"
    assert info.data.metrics["replica_max_difference"] == 0.0  # DDP kept the replicas equal
    steps = sorted(m.step for m in client.get_metric_history(info.info.run_id, "train_loss"))
    assert steps == [0, 1]  # each epoch once (rank 0 logs)
    assert "test_volume_dice" in info.data.metrics and info.data.tags.get("covidseg.model_uri")
    assert r.stdout.count("covidseg finetune: done") == 1  # rank 0 evaluates and reports


def test_killed_two_process_run_resumes_with_two(tracking_uri, preprocess_run, tmp_path):
    client = MlflowClient(tracking_uri)
    epochs = 16
    proc = subprocess.Popen([*TORCHRUN, "--data", preprocess_run, "--epochs", str(epochs), *TINY,
                             "--experiment", "ddp-resume"], cwd=tmp_path,
                            env=subprocess_env(MLFLOW_TRACKING_URI=tracking_uri),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    run_id, seen = None, []
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        runs = _runs(client, "ddp-resume") if run_id is None else []
        run_id = run_id or (runs[0].info.run_id if runs else None)
        if run_id:
            seen = client.get_metric_history(run_id, "train_loss")
            state = Path(os.environ["COVIDSEG_CACHE"]) / "training" / run_id / "last.pt"
            if len(seen) >= 2 and state.exists():  # rank 0 wrote its resume state
                _kill_tree(proc.pid)  # the machine dies: torchrun and both ranks
                break
        time.sleep(0.1)
    proc.wait(30)
    assert run_id and len(seen) >= 2 and proc.returncode == -signal.SIGKILL, "killed too late"
    before = len(client.get_metric_history(run_id, "train_loss"))
    assert before < epochs and client.get_run(run_id).info.status == "RUNNING"

    # one process cannot continue a 2-process run: one line, the run untouched
    r = run(["covidseg", "finetune", "--resume", run_id], tmp_path,
            MLFLOW_TRACKING_URI=tracking_uri)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "trained by 2 process(es)" in r.stderr.strip().splitlines()[-1]
    assert client.get_run(run_id).info.status == "RUNNING"

    r = run([*TORCHRUN, "--resume", run_id], tmp_path, MLFLOW_TRACKING_URI=tracking_uri)
    assert r.returncode == 0, r.stderr[-4000:]
    info = client.get_run(run_id)
    assert info.info.status == "FINISHED" and len(_runs(client, "ddp-resume")) == 1
    steps = sorted(m.step for m in client.get_metric_history(run_id, "train_loss"))
    assert steps == list(range(epochs)), steps  # none lost, none twice
    assert info.data.params["world_size"] == "2"
    assert info.data.metrics["replica_max_difference"] == 0
