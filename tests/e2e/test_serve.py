"""The registered model served by ``mlflow models serve`` (a real scoring server against the
session's tracking server): a NIfTI path in, the report row out and the mask written, the
threshold as a request parameter, a bad path as HTTP 400 with one line; and the model card on the
registered version, the logged model and the run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from tests.conftest import FAST, free_port, run, subprocess_env

NAME = "covid-served"


@pytest.fixture(scope="module")
def served(mlflow_server, preprocess_run, tmp_path_factory):
    """A tiny finetune registered as ``covid-served@champion``, served on a free loopback port;
    yields (scoring URL, the finetune's run id)."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("serve")
    r = run(["covidseg", "finetune", "--data", preprocess_run, "--epochs", "2",
             "--register_as", NAME, "--alias", "champion", "--experiment", "serve",
             *[f"--{k}={v}" for k, v in FAST.items()]], root,
            MLFLOW_TRACKING_URI=mlflow_server.uri)
    assert r.returncode == 0, r.stderr[-3000:]
    version = MlflowClient(mlflow_server.uri).get_model_version_by_alias(NAME, "champion")
    port = free_port()
    with open(root / "serve.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{NAME}@champion",
             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
            cwd=root, env=subprocess_env(MLFLOW_TRACKING_URI=mlflow_server.uri), stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 240
        while True:
            assert proc.poll() is None, (root / "serve.log").read_text()[-3000:]
            assert time.time() < deadline, (root / "serve.log").read_text()[-3000:]
            try:
                if requests.get(url + "/ping", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(1)
        yield url, version.run_id
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def invoke(url: str, body: dict) -> requests.Response:
    return requests.post(url + "/invocations", data=json.dumps(body),
                         headers={"Content-Type": "application/json"}, timeout=300)


def test_the_served_model_predicts_a_file_with_the_threshold_as_a_parameter(served, phantom_files,
                                                                            tmp_path):
    url, _ = served
    _, cases = phantom_files
    image = str(cases[0]["image"])
    r = invoke(url, {"dataframe_records": [{"path": image, "output": str(tmp_path / "a")}]})
    assert r.status_code == 200, r.text
    (row,) = r.json()["predictions"]
    assert row["case_id"] == "case_0" and row["infection_mask"] == "case_0_infection.nii.gz"
    assert {"lung_volume_ml", "lesion_volume_ml", "involvement_percent", "severity"} <= set(row)
    assert (tmp_path / "a" / "case_0_infection.nii.gz").exists()
    assert (tmp_path / "a" / "case_0_lung.nii.gz").exists()
    # params: the declared inference parameter reaches the model
    rows = {}
    for threshold in (0.001, 0.999):
        r = invoke(url, {"dataframe_split": {"columns": ["path", "output"],
                                             "data": [[image, str(tmp_path / str(threshold))]]},
                         "params": {"threshold": threshold}})
        assert r.status_code == 200, r.text
        rows[threshold] = r.json()["predictions"][0]
        assert rows[threshold]["threshold"] == threshold
    assert rows[0.999]["lesion_volume_ml"] < rows[0.001]["lesion_volume_ml"]


def test_a_bad_path_is_a_400_with_one_line(served, tmp_path):
    url, _ = served
    missing = str(tmp_path / "nowhere" / "scan.nii.gz")
    r = invoke(url, {"dataframe_records": [{"path": missing, "output": str(tmp_path)}]})
    assert r.status_code == 400
    body = r.json()
    assert body["error_code"] == "INVALID_PARAMETER_VALUE"
    assert body["message"] == f"{missing}: file does not exist"
    assert "stack_trace" not in body and "Traceback" not in r.text
    r = invoke(url, {"dataframe_records": [{"file": missing}]})
    assert r.status_code == 400 and "\n" not in r.json()["message"]
    assert r.json()["message"].startswith("the input needs a 'path' column")


def test_the_model_card_is_on_the_version_the_model_and_the_run(served, mlflow_server,
                                                                preprocess_run, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server.uri)
    _, run_id = served
    finetune = client.get_run(run_id)
    card = client.get_model_version_by_alias(NAME, "champion").description
    val_dice = finetune.data.metrics["final_val_volume_dice"]
    pre = client.get_run(preprocess_run).data
    assert card.startswith(f"# {NAME}: COVID-19 lesion segmentation"), card
    assert f"| validation | {val_dice:.4f} |" in card, card
    assert f"fingerprint (content key) `{pre.tags['covidseg.dataset_key']}`" in card, card
    assert f"- Fingerprint: {int(pre.metrics['fp_n_labelled'])} labelled" in card, card
    assert "- Plan (" in card and "## Intended use" in card and "## Known limits" in card
    model_id = finetune.data.tags["covidseg.model_uri"].split("/")[-1]
    assert client.get_logged_model(model_id).tags["mlflow.note.content"] == card
    assert client.download_artifacts(run_id, "model_card.md", str(tmp_path))
    assert (tmp_path / "model_card.md").read_text() == card
