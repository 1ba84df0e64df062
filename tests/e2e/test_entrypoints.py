"""Entry points through the three doors (mlflow run, python entrypoints/NAME.py, covidseg NAME)
against a real MLflow server, and the command line's one-line errors."""

import re
import shutil
import sys
import time
from pathlib import Path

import pytest

from covidseg.config import CONFIGS
from tests.conftest import REPO, TINY_DEMO, free_port
from tests.unit.config.test_entrypoints import run

TINY_ARGS = [f"--{k}={v}" for k, v in TINY_DEMO.items()]


@pytest.mark.e2e
def test_cli_errors_are_one_line(tmp_path):
    r = run(["covidseg", "preprocess", "--bogus", "1"], tmp_path)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "unrecognized arguments: --bogus 1" in r.stderr
    r = run(["covidseg", "preprocess", "--intensity", "hounsfield"], tmp_path)
    assert r.returncode == 2
    assert "intensity='hounsfield' is not one of auto, hu, display, image" in r.stderr
    r = run(["covidseg", "preprocess", "--folds", "two"], tmp_path)
    assert r.returncode == 2 and "folds='two' is not a valid int" in r.stderr
    r = run(["covidseg", "finetune", "--strategy", "everything"], tmp_path)
    assert r.returncode == 2 and "strategy='everything' is not one of" in r.stderr
    r = run(["covidseg", "preprocess", "--data", str(tmp_path / "nowhere")], tmp_path,
            MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/local.db")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].endswith(
        "nowhere: data folder does not exist")
    assert "Traceback" not in r.stderr


@pytest.mark.e2e
def test_server_down_fails_fast(tmp_path):
    start = time.time()
    r = run(["covidseg", "preprocess"], tmp_path,
            MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}")
    assert r.returncode == 2 and time.time() - start < 60
    assert "is not reachable" in r.stderr and "Traceback" not in r.stderr


def _run_id(output: str) -> str:
    m = re.search(r"Run \(ID '([0-9a-f]{32})'\) succeeded", output)
    assert m, output[-3000:]
    return m.group(1)


def test_preprocess_three_ways_against_a_real_server(tracking_uri, tmp_path):
    from mlflow.tracking import MlflowClient

    params = [x for k, v in TINY_DEMO.items() for x in ("-P", f"{k}={v}")]
    r = run([sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "preprocess",
             "--env-manager", "local", "--experiment-name", "e2e-preprocess", *params], tmp_path,
            MLFLOW_TRACKING_URI=tracking_uri)
    assert r.returncode == 0, r.stderr[-4000:]
    run_id = _run_id(r.stdout + r.stderr)

    client = MlflowClient(tracking_uri)
    info = client.get_run(run_id)
    assert info.info.status == "FINISHED"
    p, m, t = info.data.params, info.data.metrics, info.data.tags
    assert p["data"] == "demo" and p["demo_labelled"] == "6" and p["window_min"] == "-1250.0"
    assert len(p) == len(CONFIGS["preprocess"].__dataclass_fields__)
    assert m["n_cases"] == 11 and m["n_failed"] == 0 and m["fp_n_labelled"] == 8
    assert m["fp_spacing_xy_min"] >= 0.6 and m["fp_thickness_max"] <= 8
    assert m["fp_lung_classical_cases"] == 11
    assert t["covidseg.version"] and t["covidseg.cache_hit"] in ("true", "false")
    assert re.match(r"^[0-9a-f]{40}", t.get("covidseg.git_commit", "")), t
    key = t["covidseg.dataset_key"]

    def listing(path):
        return {Path(a.path).name: a for a in client.list_artifacts(run_id, path)}

    figs = listing("figures")
    assert {"spacing_per_source.png", "intensity_histogram_before_after.png"} <= set(figs)
    assert any(n.startswith("lung_filtering_3views_volume_") for n in figs)
    assert all(a.file_size > 5000 for a in figs.values())
    local = Path(client.download_artifacts(run_id, "figures/spacing_per_source.png", str(tmp_path)))
    assert local.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"failed.csv", "splits.json", "fingerprint.json", "cases.csv"} <= \
        set(listing("preprocess"))
    # the arrays are uploaded once per dataset: by this run, or by an earlier one it points at
    holder = t["covidseg.dataset_run"]
    assert "dataset.json" in listing("dataset")
    assert client.list_artifacts(holder, "dataset/cases")
    # a fresh preprocessing uploads its arrays itself; a local cache hit (an earlier test of this
    # session may have built the same dataset) uploads them unless this server already has them
    assert holder == run_id or t["covidseg.cache_hit"] == "true"

    # the same job as a console script and as the entry-point file: same dataset, cache hits
    for cmd in (["covidseg", "preprocess", *TINY_ARGS],
                [sys.executable, str(REPO / "entrypoints" / "preprocess.py"), *TINY_ARGS]):
        r = run(cmd, tmp_path, MLFLOW_TRACKING_URI=tracking_uri)
        assert r.returncode == 0, r.stderr[-3000:]
        other = re.search(r"run_id=([0-9a-f]{32})", r.stdout).group(1)
        tags = client.get_run(other).data.tags
        assert tags["covidseg.dataset_key"] == key and tags["covidseg.cache_hit"] == "true"
        # the arrays are uploaded once: cache hits point at the run that holds them
        assert tags["covidseg.dataset_uploaded"] == "false"
        assert tags["covidseg.dataset_run"] == holder
        assert client.get_run(other).data.metrics["n_cases"] == 11
        # one naming scheme and the same identity tags, whichever door started the run
        for rid in (run_id, other):
            t_ = client.get_run(rid).data.tags
            name = t_["mlflow.runName"]
            assert re.fullmatch(r"preprocess-\d{8}-\d{6}", name), name
            assert re.match(r"^[0-9a-f]{40}$", t_["mlflow.source.git.commit"]) and t_["mlflow.user"]
        assert client.get_experiment(info.info.experiment_id).tags["mlflow.experimentKind"] == \
            "custom_model_development"

    # a later stage finds the dataset from the run id alone, even with an empty local cache
    from covidseg.base.paths import cache_root
    from covidseg.stages.datasets import resolve_dataset

    ds, source = resolve_dataset(run_id)
    assert source == run_id and ds.key == key
    shutil.rmtree(cache_root() / "preprocessed" / key)
    ds2, _ = resolve_dataset(f"runs:/{other}")  # follows covidseg.dataset_run to the arrays
    assert ds2.key == key and ds2.root != ds.root
    assert sorted(ds2.cases) == sorted(ds.cases)
    image, infection, lung = ds2.load(ds2.splits.test[0])
    assert image.ndim == 3 and infection.shape == image.shape


@pytest.mark.e2e
def test_python_dash_m_covidseg_is_the_console_script(tmp_path):
    r = run([sys.executable, "-m", "covidseg", "preprocess", "--help"], tmp_path)
    assert r.returncode == 0 and "--image_size" in r.stdout, r.stderr[-2000:]
    bad = run([sys.executable, "-m", "covidseg", "nosuch"], tmp_path)
    assert bad.returncode == 2 and "unknown entry point 'nosuch'" in bad.stderr
