"""The tracking server killed in the middle of a finetune run: the run fails at once with a clear
message and its local training state remains; after a restart, ``resume`` completes the run with
no lost and no duplicated metric steps."""

import os
import re
import signal
import subprocess
import time

import pytest

from tests.conftest import FAST, TINY_DEMO, MlflowServer, run, subprocess_env

pytestmark = pytest.mark.e2e  # starts its own mlflow server and covidseg subprocesses


def test_server_killed_mid_run_then_resumed(tmp_path):
    from mlflow.tracking import MlflowClient

    from covidseg.base.paths import cache_root

    root = tmp_path / "server"
    root.mkdir()
    server = MlflowServer(root).start()
    # two retries: this test is about what a dead server leaves and how the run resumes; riding
    # out a restart (six retries over ~60 s, the default) is test_grid_workers' outage test
    env = {"MLFLOW_TRACKING_URI": server.uri, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2"}
    r = run(["covidseg", "preprocess", *[f"--{k}={v}" for k, v in TINY_DEMO.items()]], tmp_path,
            **env)
    assert r.returncode == 0, r.stderr[-2000:]
    data = re.search(r"run_id=([0-9a-f]{32})", r.stdout).group(1)
    epochs = 10
    proc = subprocess.Popen(["covidseg", "finetune", "--data", data, "--epochs", str(epochs),
                             "--patience", "0", "--experiment", "faults",
                             *[f"--{k}={v}" for k, v in FAST.items()]],
                            cwd=tmp_path, env=subprocess_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, encoding="utf-8", errors="replace")
    client = MlflowClient(server.uri)
    run_id, deadline = None, time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        exp = client.get_experiment_by_name("faults")
        runs = client.search_runs([exp.experiment_id]) if exp else []
        if runs and len(client.get_metric_history(runs[0].info.run_id, "train_loss")) >= 2:
            run_id = runs[0].info.run_id
            break
        time.sleep(0.2)
    assert run_id, "training did not start"
    os.killpg(server.proc.pid, signal.SIGKILL)  # the server dies mid-run
    server.proc.wait(10)
    t0 = time.time()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert "stopped answering" in last and f"resume={run_id}" in last and "Traceback" not in err
    assert time.time() - t0 < 120  # fails promptly, not after minutes of retries
    state = cache_root() / "training" / run_id / "last.pt"
    assert state.exists()  # the local training state remains

    server = MlflowServer(root).start()  # same database and artifacts, new port
    try:
        client = MlflowClient(server.uri)
        logged_before = sorted(m.step for m in client.get_metric_history(run_id, "train_loss"))
        r = run(["covidseg", "finetune", "--resume", run_id], tmp_path,
                MLFLOW_TRACKING_URI=server.uri)
        assert r.returncode == 0, r.stderr[-3000:]
        info = client.get_run(run_id)
        assert info.info.status == "FINISHED"
        steps = sorted(m.step for m in client.get_metric_history(run_id, "train_loss"))
        assert steps == list(range(epochs)), (logged_before, steps)
        assert len(logged_before) >= 2 and "test_volume_dice" in info.data.metrics
    finally:
        server.stop()


def _mount_tmpfs(path, megabytes: int) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path)],
                       capture_output=True)
    return r.returncode == 0


def _fill_to(folder, free_mb: int) -> None:
    """A ballast file that leaves ``free_mb`` MB free on ``folder``'s file system."""
    import shutil

    (folder / "ballast").unlink(missing_ok=True)
    free = shutil.disk_usage(folder).free
    with open(folder / "ballast", "wb") as fh:
        fh.truncate(0)
        fh.write(b"\0" * max(0, free - free_mb * 2**20))


def test_disk_full_keeps_the_model_or_says_in_one_line_what_was_kept(tmp_path, mlflow_server):
    """The training cache on a small tmpfs.  With room for the model but not for the resume state
    (a ResNet-18 U-Net + AdamW: ~3x the model): one warning, no partial file, the run FINISHED
    with its model and test scores.  With room for neither: exit 2, one line saying the run keeps
    its metrics and evaluation, which it does, and no partial file either."""
    import shutil

    from mlflow.tracking import MlflowClient

    cache = tmp_path / "cache"
    if not _mount_tmpfs(cache, 400):
        pytest.skip("mounting a tmpfs needs root (and a kernel that allows it)")
    try:
        env = {"MLFLOW_TRACKING_URI": mlflow_server.uri, "COVIDSEG_CACHE": str(cache)}
        r = run(["covidseg", "preprocess", *[f"--{k}={v}" for k, v in TINY_DEMO.items()]],
                tmp_path, **env)
        assert r.returncode == 0, r.stderr[-2000:]
        data = re.search(r"run_id=([0-9a-f]{32})", r.stdout).group(1)
        client = MlflowClient(mlflow_server.uri)
        args = ["covidseg", "finetune", "--data", data, "--epochs", "2", "--experiment",
                "disk-full", "--checkpoint_every", "0", *[f"--{k}={v}" for k, v in FAST.items()]]

        _fill_to(cache, 100)  # the model (~57 MB) fits, the resume state (~170 MB) does not
        r = run(args, tmp_path, **env)
        assert r.returncode == 0, r.stderr[-3000:]
        assert r.stderr.count("could not write the resume state") == 1
        assert "Traceback" not in r.stderr
        assert not [p for p in cache.rglob("*") if p.suffix == ".tmp"]
        first = client.search_runs([client.get_experiment_by_name("disk-full").experiment_id])
        assert first[0].info.status == "FINISHED" and "test_volume_dice" in first[0].data.metrics
        assert first[0].data.tags["covidseg.model_uri"].startswith("models:/")

        _fill_to(cache, 20)  # not even the model
        r = run(args, tmp_path, **env)
        assert r.returncode == 2, r.stderr[-3000:]
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("covidseg finetune: error: could not write the trained model")
        assert "keeps its metrics and evaluation" in last and "Traceback" not in r.stderr
        runs = client.search_runs([client.get_experiment_by_name("disk-full").experiment_id],
                                  order_by=["attributes.start_time DESC"])
        assert runs[0].info.run_id in last and "test_volume_dice" in runs[0].data.metrics
        assert not [p for p in cache.rglob("*") if p.suffix == ".tmp" or p.name == "model"]
    finally:
        subprocess.run(["umount", "-l", str(cache)], capture_output=True)
        shutil.rmtree(cache, ignore_errors=True)
