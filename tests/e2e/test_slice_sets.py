"""2D slice sets as a new user meets them (issue 13): a folder of PNG/JPG slices of varying sizes
with 0/255 masks through preprocess → finetune → evaluate → predict with ``mlflow run`` against a
real server on the first try; metrics on each image's original grid equal the ones computed by
hand on the written files; one-slice volumes are slices; multi-class masks; true messages."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from covidseg.train.metrics import overlap_metrics, surface_dice_area
from tests.conftest import REPO
from tests.e2e.test_entrypoints import _run_id, run
from tests.unit.stages.test_slice_sets import _patterns, _read, write_slice_set


def test_slice_folder_through_mlflow_run_first_try(tracking_uri, tmp_path):
    """preprocess (absolute patterns, ``data`` left at its default) → finetune (threshold=auto)
    → evaluate → predict (probabilities) as `mlflow run`, with figures; the original-grid Dice of
    every test slice equals the Dice of predict's written mask against the mask file."""
    from mlflow.tracking import MlflowClient

    root = write_slice_set(tmp_path / "slices")
    client = MlflowClient(tracking_uri)

    def mlflow_run(entry, **params):
        args = [x for k, v in params.items() for x in ("-P", f"{k}={v}")]
        r = run([sys.executable, "-m", "mlflow", "run", str(REPO), "-e", entry, "--env-manager",
                 "local", "--experiment-name", "slices-e2e", *args], tmp_path,
                MLFLOW_TRACKING_URI=tracking_uri)
        assert r.returncode == 0, (entry, r.stderr[-4000:])
        return client.get_run(_run_id(r.stdout + r.stderr))

    prep = mlflow_run("preprocess", image_size=64, test_cases=3, folds=2, **_patterns(root))
    figs = {Path(a.path).name for a in client.list_artifacts(prep.info.run_id, "figures")}
    assert "slices_before_after.png" in figs and not any("3views" in f for f in figs)
    assert prep.data.metrics["n_cases"] == 10 and prep.data.metrics["n_failed"] == 0

    ft = mlflow_run("finetune", data=prep.info.run_id, epochs=3, patience=5, batch_size=4,
                    encoder="resnet18", lr=1e-3, checkpoint_every=0, threshold="auto", overlays=1,
                    workers=0, iterations_per_epoch=6, warmup=0)
    p, m = ft.data.params, ft.data.metrics
    # `mlflow run` logged the parameters as given; what the recipe filled in is recipe_<name>
    assert (p["optimizer"], p["recipe_optimizer"], p["recipe_schedule"]) == ("''", "adamw",
                                                                           "cosine")
    assert p["lr"] == "0.001" and "recipe_lr" not in p  # given explicitly: no recipe value
    for key in ("test_volume_dice", "test_volume_dice_resampled", "test_volume_nsd_area",
                "test_slice_dice_thravg", "test_slice_dice_max", "test_slice_sensitivity",
                "test_slice_specificity", "threshold"):
        assert key in m and np.isfinite(m[key]), key
    assert 0.05 <= m["threshold"] <= 0.95
    assert m["test_slice_dice_max"] >= m["test_slice_dice_thravg"]
    figs = {Path(a.path).name for a in client.list_artifacts(ft.info.run_id, "figures")}
    assert "training_curves.png" in figs and any(f.startswith("overlay_slices_test_") for f in figs)
    assert "test_slice_dice_per_image.png" in figs and "test_volume_dice.png" not in figs
    from covidseg.tracking import download_model

    model_dir, _ = download_model(ft.info.run_id)  # the threshold travels with the model
    assert json.loads((Path(model_dir) / "model.json").read_text())["threshold"] == \
        pytest.approx(m["threshold"])

    ev = mlflow_run("evaluate", model=ft.info.run_id, data=prep.info.run_id)
    assert ev.data.metrics["test_volume_dice"] == pytest.approx(m["test_volume_dice"], abs=1e-6)
    assert ev.data.metrics["threshold"] == pytest.approx(m["threshold"])
    table = Path(client.download_artifacts(ev.info.run_id, "tables/test_per_volume.csv",
                                           str(tmp_path / "ev")))
    rows = {r["case_id"]: r for r in csv.DictReader(table.open())}
    assert set(rows) == {f"slice{k:02d}" for k in range(7, 10)}
    assert all(r["grid"] == "original" for r in rows.values())

    out = tmp_path / "pred"
    mlflow_run("predict", model=ft.info.run_id, input=str(root / "test" / "images"),
               output=str(out), probabilities="true")
    for case, row in rows.items():
        image = next((root / "test" / "images").glob(f"{case}.*"))
        ref = _read(root / "test" / "masks" / f"{case}_mask.png") > 0
        pred = _read(out / f"{case}_infection.png")
        prob = _read(out / f"{case}_probability.png")
        assert pred.shape == ref.shape == prob.shape == _read(image).shape[-2:]
        assert set(np.unique(pred)) <= {0, 255}
        report = json.loads((out / f"{case}_report.json").read_text())
        assert report["threshold"] == pytest.approx(m["threshold"])
        # by hand, on the written files: the same Dice and surface Dice as evaluate's table
        assert overlap_metrics(pred > 0, ref)["dice"] == pytest.approx(float(row["volume_dice"]),
                                                                      abs=1e-9)
        assert surface_dice_area(pred > 0, ref, (1.0, 1.0)) == pytest.approx(
            float(row["volume_nsd_area"]), abs=1e-6)








