"""``finetune -P cv=K`` against a real server: one parent run, K nested fold runs, the
out-of-fold table, and an ensemble model that ``evaluate`` and ``predict`` use — whose
evaluation equals the mean of the fold models' probabilities, thresholded."""


import numpy as np
import pytest

from tests.conftest import FAST, run


def test_cv_parent_nested_folds_and_the_ensemble(tracking_uri, preprocess_run, tmp_path,
                                                 phantom_files):
    import torch
    from mlflow.tracking import MlflowClient

    from covidseg.inference import predict_volume
    from covidseg.models.checkpoint import load_model
    from covidseg.stages.datasets import resolve_dataset
    from covidseg.tracking import download_model
    from covidseg.train.metrics import overlap_metrics

    client = MlflowClient(tracking_uri)
    params = {"data": preprocess_run, "cv": 2, "epochs": 2, "iterations_per_epoch": 3,
              "checkpoint_every": 0, "overlays": 1, "experiment": "cv", **FAST}
    r = run(["covidseg", "finetune", *[f"--{k}={v}" for k, v in params.items()]], tmp_path,
            MLFLOW_TRACKING_URI=tracking_uri)
    assert r.returncode == 0, r.stderr[-3000:]
    experiment = client.get_experiment_by_name("cv").experiment_id
    (p,) = client.search_runs([experiment], "tags.`covidseg.entry_point` = 'finetune' and "
                                            "params.cv = '2'")
    parent = p.info.run_id
    assert p.info.status == "FINISHED"
    children = client.search_runs([p.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(c.data.tags["covidseg.cv_fold"] for c in children) == ["0", "1"]
    assert all(c.info.status == "FINISHED" and c.data.params["fold"] == c.data.tags[
        "covidseg.cv_fold"] and c.data.params["cv"] == "0" for c in children)
    assert all("covidseg.model_uri" in c.data.tags for c in children)  # each its own model
    assert set(p.data.tags["covidseg.ensemble_of"].split(",")) == {c.info.run_id
                                                                   for c in children}
    m = p.data.metrics
    assert m["cv_folds"] == 2 and 0 <= m["cv_volume_dice"] <= 1 and "test_volume_dice" in m
    names = {a.path for a in client.list_artifacts(parent, "tables")}
    assert {"tables/cv_folds.csv", "tables/oof_per_volume.csv"} <= names
    oof = client.download_artifacts(parent, "tables/oof_per_volume.csv", str(tmp_path))
    rows = open(oof).read().splitlines()
    ds = resolve_dataset(preprocess_run)[0]
    labelled = sum(len(f) for f in ds.splits.folds)
    assert len(rows) == 1 + labelled  # every labelled training case scored once, out of fold
    # the ensemble's card scores it out of fold
    card = client.get_logged_model(p.data.tags["covidseg.model_uri"].split("/")[-1]).tags[
        "mlflow.note.content"]
    assert f"| validation (out-of-fold, 2 folds) | {m['cv_volume_dice']:.4f} |" in card, card
    assert "An ensemble of 2 fold models" in card

    # evaluate on the ensemble = the mean of the fold models' probabilities, thresholded
    r = run(["covidseg", "evaluate", f"--model={parent}", f"--data={preprocess_run}",
             "--experiment=cv"], tmp_path, MLFLOW_TRACKING_URI=tracking_uri)
    assert r.returncode == 0, r.stderr[-3000:]
    folds = [load_model(download_model(c.info.run_id)[0])[0] for c in children]
    cpu = torch.device("cpu")
    dices = []
    for case in ds.splits.test:
        image, infection, _ = ds.load(case)
        mean = np.mean([predict_volume(f, np.asarray(image), cpu) for f in folds], axis=0)
        dices.append(overlap_metrics(mean > 0.5, np.asarray(infection) > 0)["dice"])
    ev = client.search_runs([p.info.experiment_id], "tags.`covidseg.entry_point` = 'evaluate'")
    resampled = ev[0].data.metrics["test_volume_dice_resampled"]
    assert resampled == pytest.approx(float(np.mean(dices)), abs=1e-6)

    # predict uses it like any model
    root, cases = phantom_files
    out = tmp_path / "pred"
    r = run(["covidseg", "predict", f"--model={parent}", f"--input={cases[0]['image']}",
             f"--output={out}", "--experiment=cv"], tmp_path, MLFLOW_TRACKING_URI=tracking_uri)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "case_0_infection.nii.gz").exists()
