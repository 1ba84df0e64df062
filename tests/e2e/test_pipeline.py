"""The whole chain as one ``mlflow run . -e pipeline``: a parent run with six nested stages, each
tagged with its sources and holding its artifacts."""

import shutil
from pathlib import Path

import pytest

from covidseg.config import PipelineConfig
from tests.conftest import TINY_DEMO, mlflow_run
from tests.helpers import chromium

# finetune_lr 3e-3: in 4 short epochs the re-initialised last block and head (strategy all) must
# move far enough from p = 0.5 everywhere for self-training to find confident pixels
TINY = {**TINY_DEMO, "pretrain_epochs": 1, "pretrain_image_size": 0, "finetune_epochs": 4,
        "finetune_lr": 3e-3,
        "meanteacher_epochs": 1, "probe_slices": 4, "max_points": 300,
        **{f"{s}_{k}": v for s in ("pretrain", "finetune", "meanteacher")
           for k, v in {"encoder": "resnet18", "workers": 0, "iterations_per_epoch": 6,
                        "warmup": 0}.items()
           if f"{s}_{k}" in PipelineConfig.__dataclass_fields__}}


def test_pipeline_nests_every_stage_with_lineage(tracking_uri, tmp_path):
    from mlflow.tracking import MlflowClient

    parent = mlflow_run("pipeline", TINY, tmp_path, tracking_uri, "pipeline")
    client = MlflowClient(tracking_uri)
    p = client.get_run(parent)
    kids = {r.data.tags["covidseg.pipeline_stage"]: r for r in client.search_runs(
        [p.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")}
    assert set(kids) == {"preprocess", "pretrain", "finetune", "pseudolabel", "meanteacher",
                         "compare"}
    assert all(r.info.status == "FINISHED" for r in kids.values())
    ids = {k: r.info.run_id for k, r in kids.items()}
    t = {k: r.data.tags for k, r in kids.items()}
    assert t["pretrain"]["covidseg.source.data"] == ids["preprocess"]
    assert t["finetune"]["covidseg.source.init"] == ids["pretrain"]
    assert t["pseudolabel"]["covidseg.source.model"] == ids["finetune"]
    assert t["meanteacher"]["covidseg.source.pseudo"] == ids["pseudolabel"]
    assert t["compare"]["covidseg.source.final"] == ids["finetune"]
    assert t["compare"]["covidseg.source.init"] == ids["pretrain"]
    assert p.data.tags["covidseg.stage.meanteacher"] == ids["meanteacher"]
    assert kids["finetune"].data.params["epochs"] == "4"
    assert kids["finetune"].data.params["lr"] == "0.003"
    assert "finetune_test_volume_dice" in p.data.metrics
    names = {Path(a.path).name for a in client.list_artifacts(ids["compare"], "figures")}
    assert names == {"svcca_init-vs-final.png"}
    assert client.list_artifacts(ids["pseudolabel"], "pseudo")
    # the demo defaults accept pseudo-labels, and the demo's truth scores them
    pm = kids["pseudolabel"].data.metrics
    assert pm["n_accepted"] > 0 and "pseudo_oracle_dice" in p.data.metrics
    assert kids["pseudolabel"].data.tags["covidseg.oracle"] == "true"
    assert kids["meanteacher"].data.tags["covidseg.model_uri"].startswith("models:/")

    # the UI in a real browser: the experiment's runs table and a run page
    if shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it): UI not checked")
    shots = tmp_path / "ui"
    shots.mkdir()
    exp = p.info.experiment_id
    dom = chromium(f"{tracking_uri}/#/experiments/{exp}/runs", tmp_path, shots / "runs.png")
    assert p.info.run_name in dom  # the stages are nested (collapsed) under it in the table
    for stage, r in kids.items():  # each stage's own run page
        dom = chromium(f"{tracking_uri}/#/experiments/{exp}/runs/{r.info.run_id}", tmp_path,
                       shots / "finetune_run.png" if stage == "finetune" else None)
        assert r.info.run_name in dom and "covidseg.entry_point" in dom, stage
        if stage == "finetune":
            assert "covidseg.source.init" in dom
    assert all((shots / n).stat().st_size > 20_000 for n in ("runs.png", "finetune_run.png"))
    client.log_artifacts(parent, str(shots), "ui")  # the screenshots, browsable with the run


def test_grid_cells_nested_aggregated_and_reused(tracking_uri, preprocess_run, tmp_path):
    from mlflow.tracking import MlflowClient

    params = {"data": preprocess_run, "archs": "unet", "strategies": "scratch,decoder",
              "regimes": "10-40", "folds": "0,1", "pretrain_epochs": 1, "epochs": 1,
              "iterations_per_epoch": 6, "encoder": "resnet18", "workers": 0}
    # two inits: restoration and supervised (the auxiliary non-COVID volumes) pretraining
    first = mlflow_run("grid", {**params, "inits": "restoration,supervised"}, tmp_path,
                       tracking_uri, "grid")
    client = MlflowClient(tracking_uri)
    p = client.get_run(first)
    assert (p.data.metrics["runs"], p.data.metrics["reused"], p.data.metrics["cells"]) == (6, 0, 3)
    kids = client.search_runs([p.info.experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{first}'")
    entries = sorted(k.data.tags["covidseg.entry_point"] for k in kids)
    assert entries == ["finetune"] * 6 + ["pretrain"] * 2
    pres = {k.data.params["mode"]: k.info.run_id for k in kids
            if k.data.tags["covidseg.entry_point"] == "pretrain"}
    assert set(pres) == {"restoration", "supervised"}
    decoder = [k for k in kids if k.data.params.get("strategy") == "decoder"]
    assert sorted(k.data.tags["covidseg.source.init"] for k in decoder) == sorted(
        [pres["restoration"]] * 2 + [pres["supervised"]] * 2)
    assert {k.data.tags["covidseg.grid_init"] for k in decoder} == {"restoration", "supervised"}
    table = Path(client.download_artifacts(first, "grid/table.csv", str(tmp_path))).read_text()
    assert table.splitlines()[0].startswith(
        "arch,init,cell,regime,folds,train_mean,train_std,val_mean")
    assert len(table.splitlines()) == 4
    assert {line.split(",")[1] for line in table.splitlines()[1:]} == {"scratch", "restoration",
                                                                      "supervised"}
    figures = {Path(a.path).name for a in client.list_artifacts(first, "figures")}
    assert figures == {"grid_volume_dice.png"}
    # the same grid again (with the pretrained network given): every finetune is reused
    second = mlflow_run("grid", {**params, "pretrained": pres["restoration"]}, tmp_path,
                        tracking_uri, "grid")
    m = client.get_run(second).data.metrics
    assert m["runs"] == 4 and m["reused"] == 4
    assert not client.search_runs([p.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{second}'")


def test_pipeline_on_a_glob_folder_with_unlabelled_images(tracking_uri, tmp_path, phantom_files):
    """A user's own folder (dataset=glob, labelled + unlabelled images), the user's init
    (scratch: no pretrain stage), a strategy: every input the stages take, through pipeline."""
    from mlflow.tracking import MlflowClient

    root, _ = phantom_files
    params = {"data": root, "dataset": "glob", "images": "images/case_[0-2].nii.gz",
              "masks": "masks/*.nii.gz", "preprocess_unlabelled": "images/case_3.nii.gz",
              "lungs": "lungs/*.nii.gz", "lung_method": "provided", "test_cases": 1, "folds": 2,
              "init": "scratch", "strategy": "all", "finetune_epochs": 2, "finetune_lr": 3e-3,
              "meanteacher_epochs": 1,
              **{k: v for k, v in TINY.items()
                 if k.endswith(("_encoder", "_workers", "_iterations_per_epoch", "_warmup"))}}
    parent = mlflow_run("pipeline", params, tmp_path, tracking_uri, "pipeline-glob")
    client = MlflowClient(tracking_uri)
    p = client.get_run(parent)
    kids = {r.data.tags["covidseg.pipeline_stage"]: r for r in client.search_runs(
        [p.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")}
    assert set(kids) == {"preprocess", "finetune", "pseudolabel", "meanteacher"}
    assert p.data.tags["covidseg.stage.pretrain"] == "skipped: init=scratch"
    assert p.data.tags["covidseg.stage.compare"].startswith("skipped: init-vs-final needs")
    pre = kids["preprocess"].data
    assert pre.params["dataset"] == "glob" and pre.params["unlabelled"] == "images/case_3.nii.gz"
    assert pre.metrics["fp_n_unlabelled"] == 1 and pre.metrics["fp_n_labelled"] == 3
    assert kids["finetune"].data.params["init"] == "scratch"
    assert kids["pseudolabel"].data.metrics["n_candidates"] > 0  # case_3's slices
    assert "covidseg.oracle" not in kids["pseudolabel"].data.tags  # a user's data has no truth
    assert kids["meanteacher"].data.metrics["unlabelled_slices"] > 0
    assert all(r.info.status == "FINISHED" for r in kids.values())
