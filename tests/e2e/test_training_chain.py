"""pretrain → finetune → predict (→ evaluate) through ``mlflow run`` against a real server, with
lineage tags, logged artifacts and the registered pyfunc model; a killed finetune resumed in the
same run without duplicated metric steps."""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FAST, mlflow_run, run, subprocess_env


def test_pretrain_finetune_predict_chain(tracking_uri, preprocess_run, tmp_path, phantom_files):
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    pre = mlflow_run("pretrain", {"data": preprocess_run, "epochs": 2, **FAST}, tmp_path,
                     tracking_uri, "chain")
    p = client.get_run(pre)
    assert p.info.status == "FINISHED" and p.data.tags["covidseg.source.data"] == preprocess_run
    assert [m.step for m in client.get_metric_history(pre, "val_restoration_mse")] == [0, 1]
    assert {a.path for a in client.list_artifacts(pre, "model")} == \
        {"model/model.json", "model/model.pt"}

    # checkpoint_every left at its default (100 iterations): the run still logs its starting point,
    # so compare's default mode works on it
    ft = mlflow_run("finetune", {"data": preprocess_run, "init": pre, "epochs": 3,
                                 "register_as": "covid-tiny", "alias": "champion", **FAST},
                    tmp_path, tracking_uri, "chain")
    f = client.get_run(ft)
    t, m = f.data.tags, f.data.metrics
    assert f.info.status == "FINISHED"
    assert t["covidseg.source.init"] == pre and t["covidseg.source.data"] == preprocess_run
    assert set(t["covidseg.sources"].split(",")) == {pre, preprocess_run}
    assert [x.step for x in client.get_metric_history(ft, "train_loss")] == [0, 1, 2]
    assert [x.step for x in client.get_metric_history(ft, "val_volume_dice")] == [0, 1, 2]
    for k in ("final_val_volume_dice", "test_volume_dice", "test_volume_hd95", "test_volume_nsd",
              "test_volume_sensitivity", "test_volume_precision", "test_slice_dice", "best_epoch"):
        assert k in m, k
    assert m["test_volumes"] == 2
    # MLflow-native: the preprocessed dataset is the run's dataset input, digest = its content key
    inputs = f.inputs.dataset_inputs
    assert len(inputs) == 1 and inputs[0].dataset.digest == \
        client.get_run(preprocess_run).data.tags["covidseg.dataset_key"]
    assert {t.key: t.value for t in inputs[0].tags}["mlflow.data.context"] == "training"
    assert client.get_experiment(f.info.experiment_id).tags["mlflow.experimentKind"] == \
        "custom_model_development"

    def names(path):
        return {Path(a.path).name for a in client.list_artifacts(ft, path)}

    assert {"test_per_volume.csv", "val_per_volume.csv"} <= names("tables")
    # the same rows as an MLflow table: the UI and mlflow.load_table compare runs with it
    loaded = client.load_table(f.info.experiment_id, "tables/test_per_volume.json", run_ids=[ft])
    assert len(loaded) == 2 and {"case_id", "volume_dice", "grid"} <= set(loaded.columns)
    figs = names("figures")
    assert {"training_curves.png", "test_volume_dice.png"} <= figs
    assert any(n.startswith("overlay_slices_test_") for n in figs)
    assert names("checkpoints") == {"step_000000"}  # < 100 iterations: the starting point only
    assert names("init") == {"report.json"}
    table = Path(client.download_artifacts(ft, "tables/test_per_volume.csv", str(tmp_path)))
    header = table.read_text().splitlines()[0]
    assert "volume_dice" in header and "volume_hd95" in header
    assert len(table.read_text().splitlines()) == 3

    # the registered pyfunc model rebuilds the network from its state dict
    uri = t["covidseg.model_uri"]
    assert t["covidseg.registered"] == "models:/covid-tiny/1"
    model = mlflow.pyfunc.load_model("models:/covid-tiny/1")
    masks = model.predict(np.zeros((3, 64, 64), np.float32))
    assert masks.shape == (3, 64, 64) and masks.dtype == np.uint8
    # the decision threshold is a declared inference parameter: it reaches the model
    x = np.random.default_rng(0).normal(size=(3, 64, 64)).astype(np.float32)
    high, low = (model.predict(x, params={"threshold": t}) for t in (0.999, 0.001))
    assert high.sum() < low.sum()
    assert model.metadata.get_params_schema().to_dict()[0]["name"] == "threshold"
    assert uri.startswith("models:/")
    # the model's own page carries its scores (metrics linked to the logged model)
    logged = mlflow.get_logged_model(uri.split("/")[-1])
    linked = {m.key: m.value for m in logged.metrics or []}
    assert linked["test_volume_dice"] == pytest.approx(m["test_volume_dice"])
    assert "threshold" in linked

    # predict from the registry through mlflow run: masks in the input geometry + report
    _, cases = phantom_files
    out = tmp_path / "pred"
    assert t["covidseg.alias"] == "models:/covid-tiny@champion"
    pr = mlflow_run("predict", {"model": "models:/covid-tiny@champion", "input": cases[0]["image"],
                                "output": out}, tmp_path, tracking_uri, "chain")
    assert client.get_run(pr).data.tags["covidseg.source.model"] == ft
    assert (out / "case_0_infection.nii.gz").exists() and (out / "case_0_report.json").exists()
    assert {Path(a.path).name for a in client.list_artifacts(pr, "predictions")} >= {
        "case_0_infection.nii.gz", "case_0_lung.nii.gz", "case_0_report.json", "predictions.csv"}

    # evaluate the fine-tuned run on the held-out test set (console script)
    r = run(["covidseg", "evaluate", "--model", ft, "--data", preprocess_run], tmp_path,
            MLFLOW_TRACKING_URI=tracking_uri)
    assert r.returncode == 0, r.stderr[-3000:]
    ev = re.search(r"run_id=([0-9a-f]{32})", r.stderr + r.stdout)
    runs = client.search_runs([client.get_experiment_by_name("evaluate").experiment_id])
    e = runs[0]
    assert e.data.tags["covidseg.source.model"] == ft and "test_volume_dice" in e.data.metrics
    assert e.data.metrics["test_volume_dice"] == pytest.approx(m["test_volume_dice"])
    del ev

    # SVCCA: the fine-tune's checkpoints against its final model (compare's default mode), and its
    # init against it
    for mode, expected_fig in (("checkpoints", "svcca_checkpoints_vs_final.png"),
                               ("init-vs-final", "svcca_init-vs-final.png")):
        mode_arg = [] if mode == "checkpoints" else ["--mode", mode]
        r = run(["covidseg", "compare", "--runs", ft, *mode_arg, "--data", preprocess_run,
                 "--probe_slices", "8", "--max_points", "400"], tmp_path,
                MLFLOW_TRACKING_URI=tracking_uri)
        assert r.returncode == 0, r.stderr[-3000:]
        cmp_run = client.search_runs([client.get_experiment_by_name("compare").experiment_id],
                                     order_by=["start_time DESC"])[0]
        source = "covidseg.source.run" if mode == "checkpoints" else "covidseg.source.final"
        assert cmp_run.data.tags[source] == ft
        names = {Path(a.path).name for a in client.list_artifacts(cmp_run.info.run_id, "figures")}
        assert names == {expected_fig}
        assert f"svcca_{mode}.csv" in {a.path for a in client.list_artifacts(cmp_run.info.run_id)}
    assert cmp_run.data.tags["covidseg.source.init"] == pre
    assert all(0 <= v <= 1 for k, v in cmp_run.data.metrics.items() if k.startswith("svcca_"))


def test_killed_finetune_resumes_in_the_same_run(tracking_uri, preprocess_run, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    epochs = 12
    args = ["covidseg", "finetune", "--data", preprocess_run, "--epochs", str(epochs),
            "--patience", "0", "--experiment", "resume-test",
            *[f"--{k}={v}" for k, v in FAST.items()]]
    proc = subprocess.Popen(args, cwd=tmp_path,
                            env=subprocess_env(MLFLOW_TRACKING_URI=tracking_uri),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    run_id, seen = None, []
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        exp = client.get_experiment_by_name("resume-test")
        if exp and run_id is None:
            runs = client.search_runs([exp.experiment_id])
            run_id = runs[0].info.run_id if runs else None
        if run_id:
            seen = client.get_metric_history(run_id, "train_loss")
            if len(seen) >= 2:
                os.killpg(proc.pid, signal.SIGKILL)
                break
        time.sleep(0.1)
    proc.wait(30)
    killed_at = time.time() * 1000
    assert run_id and len(seen) >= 2 and proc.returncode == -signal.SIGKILL, "killed too late"
    before = client.get_metric_history(run_id, "train_loss")
    assert len(before) < epochs and client.get_run(run_id).info.status == "RUNNING"

    r = run(["covidseg", "finetune", "--resume", run_id], tmp_path,
            MLFLOW_TRACKING_URI=tracking_uri)
    assert r.returncode == 0, r.stderr[-3000:]
    info = client.get_run(run_id)
    assert info.info.status == "FINISHED"
    history = client.get_metric_history(run_id, "train_loss")
    steps = sorted(m.step for m in history)
    assert steps == list(range(epochs)), steps  # none lost, none twice
    resumed = sorted(m.step for m in history if m.timestamp > killed_at)
    assert resumed and resumed[0] >= len(before) - 1 and resumed[0] > 0  # continued, not restarted
    assert info.data.params["epochs"] == str(epochs)  # the original configuration
    assert "test_volume_dice" in info.data.metrics and info.data.tags.get("covidseg.model_uri")
