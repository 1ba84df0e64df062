"""``tune``: trials as nested MLflow runs under one parent, two workers sharing one study, and a
worker killed mid-trial leaving the study usable."""

import os
import signal
import subprocess
import time
from pathlib import Path

import optuna

from tests.conftest import run, subprocess_env

TRIAL = "epochs=2,encoder=resnet18,batch_size=8,workers=0,iterations_per_epoch=6,warmup=0"


def tune_cmd(preprocess_run, study, storage, n_trials, extra=()):
    return ["covidseg", "tune", "--data", preprocess_run, "--params", TRIAL, "--n_trials",
            str(n_trials), "--study_name", study, "--storage", storage, "--experiment", "tune-test",
            "--search", "lr,lr_gamma", *extra]


def test_tune_nests_trials_under_one_parent(tracking_uri, preprocess_run, tmp_path):
    from mlflow.tracking import MlflowClient

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    r = run(tune_cmd(preprocess_run, "nest", storage, 2), tmp_path,
            MLFLOW_TRACKING_URI=tracking_uri)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "covidseg tune: done" in r.stdout
    client = MlflowClient()
    exp = client.get_experiment_by_name("tune-test").experiment_id
    parent_id = client.search_runs([exp], filter_string="tags.`covidseg.entry_point` = 'tune'")[0] \
        .info.run_id
    parent = client.get_run(parent_id)
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'")
    assert len(children) == 2 and {c.info.status for c in children} <= {"FINISHED", "KILLED"}
    for c in children:
        assert c.data.params["epochs"] == "2" and "val_volume_dice" in c.data.metrics
        assert c.data.tags["covidseg.study"] == "nest"
        # a client-created nested run carries its user, commit and the one naming scheme too
        assert c.data.tags.get("mlflow.user") and c.data.tags.get("mlflow.source.git.commit")
    # warmup_epochs (3) exceeds the trials' 2 epochs: the pruner cannot stop them (the next
    # test makes it fire)
    assert parent.data.metrics["trials_complete"] == 2
    assert parent.data.metrics["trials_pruned"] == 0
    assert "best_lr" in parent.data.params and "best_lr_gamma" in parent.data.params
    assert parent.data.tags["covidseg.best_trial_run"] in {c.info.run_id for c in children}
    figs = {Path(a.path).name for a in client.list_artifacts(parent_id, "figures")}
    assert "optimization_history.png" in figs
    # the same study name resumes the study: one more trial makes three
    r = run(tune_cmd(preprocess_run, "nest", storage, 1), tmp_path,
            MLFLOW_TRACKING_URI=tracking_uri)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(optuna.load_study(study_name="nest", storage=storage).trials) == 3


def test_the_median_pruner_stops_a_trial_below_the_completed_ones(tracking_uri, preprocess_run,
                                                                   tmp_path):
    """Two completed trials in the study that scored Dice 1.0 at every epoch, and warmup_epochs=0:
    a new trial's first validation Dice lies below their median, so the pruner stops it after
    epoch 0 — PRUNED in Optuna, its nested MLflow run KILLED and tagged pruned, counted by the
    parent."""
    from mlflow.tracking import MlflowClient

    storage = f"sqlite:///{tmp_path / 'prune.db'}"
    study = optuna.create_study(study_name="prune", storage=storage, direction="maximize")
    for _ in range(2):
        study.add_trial(optuna.trial.create_trial(value=1.0, intermediate_values={0: 1.0, 1: 1.0}))
    r = run(tune_cmd(preprocess_run, "prune", storage, 1,
                     ("--warmup_epochs", "0", "--experiment", "tune-prune")),
            tmp_path, MLFLOW_TRACKING_URI=tracking_uri)
    assert r.returncode == 0, r.stderr[-3000:]
    trials = optuna.load_study(study_name="prune", storage=storage).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2 + \
        [optuna.trial.TrialState.PRUNED]
    pruned = trials[2]
    assert list(pruned.intermediate_values) == [0] and pruned.intermediate_values[0] < 1.0
    client = MlflowClient()
    exp = client.get_experiment_by_name("tune-prune").experiment_id
    parent = client.search_runs([exp], "tags.`covidseg.entry_point` = 'tune'")[0]
    child = client.get_run(pruned.user_attrs["mlflow_run_id"])
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.info.status == "KILLED" and child.data.tags["covidseg.trial_state"] == "pruned"
    assert "epoch 0" in child.data.tags["covidseg.stop_reason"]
    assert [m.step for m in client.get_metric_history(child.info.run_id, "val_volume_dice")] == [0]
    assert parent.data.metrics["trials_pruned"] == 1 and parent.data.metrics["trials_complete"] == 2


def test_two_workers_share_a_study_and_a_killed_worker_leaves_it_usable(tracking_uri,
                                                                       preprocess_run, tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    env = subprocess_env(MLFLOW_TRACKING_URI=tracking_uri, COVIDSEG_TUNE_HEARTBEAT_S="1",
                         COVIDSEG_TUNE_GRACE_S="3", COVIDSEG_HEARTBEAT_S="1")
    workers = [subprocess.Popen(tune_cmd(preprocess_run, "shared", storage, 2), cwd=tmp_path,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                encoding="utf-8", errors="replace")
               for _ in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=600)
        assert w.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name="shared", storage=storage)
    assert len(study.trials) == 4
    assert all(t.state.is_finished() for t in study.trials)

    # a worker killed in the middle of a trial
    victim = subprocess.Popen(tune_cmd(preprocess_run, "shared", storage, 5), cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        running = [t for t in optuna.load_study(study_name="shared", storage=storage).trials
                   if t.state == optuna.trial.TrialState.RUNNING]
        if running:
            break
        time.sleep(0.3)
    assert running, "no trial started"
    time.sleep(1.5)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(30)
    time.sleep(4)  # past the grace period: the heartbeat has stopped
    # its parent run and its trial's run were left RUNNING: `covidseg tidy` closes them
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("tune-test").experiment_id
    orphans = client.search_runs([exp], "attributes.status = 'RUNNING'")
    # the worker's parent run, and its trial's run once the trial had opened it
    assert 1 <= len(orphans) <= 2 and all("covidseg.heartbeat" in o.data.tags for o in orphans)
    assert any(o.data.tags.get("covidseg.entry_point") == "tune" for o in orphans)
    r = subprocess.run(["covidseg", "tidy", "tune-test"], cwd=tmp_path, capture_output=True,
                       encoding="utf-8", errors="replace", timeout=120,
                       env={**env, "COVIDSEG_HEARTBEAT_S": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"{len(orphans)} run(s) silent for over 5 s marked FAILED" in r.stdout, r.stdout
    for o in orphans:
        info = client.get_run(o.info.run_id)
        assert info.info.status == "FAILED"
        assert "stopped sending heartbeats" in info.data.tags["covidseg.error"]
    r = subprocess.run(tune_cmd(preprocess_run, "shared", storage, 1), cwd=tmp_path, env=env,
                       capture_output=True, encoding="utf-8", errors="replace", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    trials = optuna.load_study(study_name="shared", storage=storage).trials
    killed = next(t for t in trials if t.number == running[0].number)
    assert killed.state == optuna.trial.TrialState.FAIL
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    assert sum(t.state.is_finished() and t.state != optuna.trial.TrialState.FAIL
               for t in trials) >= 5


def test_no_logged_value_holds_the_storage_password(tracking_uri, preprocess_run, postgres,
                                                    tmp_path):
    """A study on PostgreSQL with the password in the URL: no parameter, tag, artifact or output
    line of the tune run (parent and trials) holds it; under `mlflow run`, where MLflow logs the
    -P values itself, the run deletes itself at once and gives the admin's `mlflow gc`."""
    import re
    import sys

    from mlflow.tracking import MlflowClient

    from tests.conftest import REPO

    secret = "S3cr3tPassw0rd"
    url = postgres("secret_scan").replace("postgresql://postgres@",
                                          f"postgresql://postgres:{secret}@")
    r = run(tune_cmd(preprocess_run, "secret", url, 1, ("--experiment", "tune-secret")),
            tmp_path, MLFLOW_TRACKING_URI=tracking_uri)
    assert r.returncode == 0, r.stderr[-3000:]
    assert secret not in r.stdout + r.stderr
    client = MlflowClient()
    exp = client.get_experiment_by_name("tune-secret").experiment_id
    runs = client.search_runs([exp])
    assert len(runs) == 2  # the study's parent and its trial
    for run_ in runs:
        values = [*run_.data.params.values(), *run_.data.tags.values()]
        assert not [v for v in values if secret in v]
        local = Path(client.download_artifacts(run_.info.run_id, "",
                                               str(tmp_path / run_.info.run_id)))
        for f in (p for p in local.rglob("*") if p.is_file()):
            assert secret.encode() not in f.read_bytes(), f
    parent = next(x for x in runs if x.data.tags.get("covidseg.entry_point") == "tune")
    assert parent.data.params["storage"].startswith("postgresql://postgres:***@127.0.0.1")

    r = run([sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "tune", "--env-manager",
             "local", "--experiment-name", "tune-secret-mlflow-run", "-P", f"storage={url}",
             "-P", f"data={preprocess_run}", "-P", f"params={TRIAL}", "-P", "n_trials=1"],
            tmp_path, MLFLOW_TRACKING_URI=tracking_uri)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "storage holds a password" in out and "COVIDSEG_OPTUNA_STORAGE" in out
    # the run deleted itself: no member lists it; the admin's `mlflow gc` erases it for good
    leaked = re.search(r"parameter of run ([0-9a-f]{32}): covidseg deleted that run", out)
    assert leaked and f"mlflow gc --backend-store-uri <the server's database> --run-ids " \
        f"{leaked.group(1)}" in out
    assert client.get_run(leaked.group(1)).info.lifecycle_stage == "deleted"
    assert not client.search_runs([client.get_experiment_by_name(
        "tune-secret-mlflow-run").experiment_id])
