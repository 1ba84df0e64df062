"""finetune → (coarse 3D U-Net) → pseudolabel → meanteacher through ``mlflow run`` against a real
server, lineage tags linking the runs, the pseudo-labelled set and figures logged."""

import re
from pathlib import Path

import numpy as np

from tests.conftest import FAST, mlflow_run, run


def test_finetune_pseudolabel_meanteacher_chain(tracking_uri, preprocess_run, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    ft = mlflow_run("finetune", {"data": preprocess_run, "epochs": 2, **FAST}, tmp_path,
                    tracking_uri, "semi")
    r = run(["covidseg", "finetune", "--data", preprocess_run, "--arch", "unet3d", "--epochs", "2",
             "--lr", "1e-3", "--experiment", "semi"], tmp_path, MLFLOW_TRACKING_URI=tracking_uri)
    assert r.returncode == 0, r.stderr[-3000:]
    coarse = re.search(r"run_id=None|model_uri=models:/(\S+)", r.stdout)
    coarse_run = client.search_runs([client.get_experiment_by_name("semi").experiment_id],
                                    filter_string="tags.`covidseg.arch` = 'unet3d'")[0].info.run_id
    assert coarse
    pl = mlflow_run("pseudolabel", {"data": preprocess_run, "model": ft, "coarse_model": coarse_run,
                                    "patches_per_volume": 16, "labelled_patches": 40,
                                    "sim_low": 0.0, "sim_high": 1.0},
                    tmp_path, tracking_uri, "semi")
    p = client.get_run(pl)
    t, m = p.data.tags, p.data.metrics
    assert t["covidseg.source.model"] == ft and t["covidseg.source.coarse_model"] == coarse_run
    assert t["covidseg.source.data"] == preprocess_run and t["covidseg.coarse"] == "unet3d"
    assert m["n_unlabelled_patches"] == 3 * 16 and m["n_labelled_patches"] == 40
    assert m["n_accepted"] == 48 and m["acceptance_rate"] == 1.0  # the band [0, 1] takes all
    names = {Path(a.path).name for a in client.list_artifacts(pl, "figures")}
    assert names == {"similarity_histogram.png", "pseudo_label_examples.png"}
    local = Path(client.download_artifacts(pl, "pseudo/pseudo_labels.npz", str(tmp_path)))
    with np.load(local, allow_pickle=False) as z:
        assert z["images"].shape == (48, 68, 68) and z["masks"].shape == (48, 68, 68)
        assert ((z["weights"] >= 0) & (z["weights"] <= 1)).all()
    assert "accepted" in Path(client.download_artifacts(pl, "pseudo/patches.csv", str(tmp_path))).read_text()

    mt = mlflow_run("meanteacher", {"data": preprocess_run, "model": ft, "pseudo": pl, "epochs": 2,
                                    "rampup_epochs": 1, **FAST}, tmp_path, tracking_uri, "semi")
    r = client.get_run(mt)
    t, m = r.data.tags, r.data.metrics
    assert t["covidseg.source.model"] == ft and t["covidseg.source.pseudo"] == pl
    assert t["covidseg.best_network"] in ("student", "teacher")
    for k in ("val_volume_dice_student", "val_volume_dice_teacher", "loss_consistency",
              "loss_pseudo", "test_volume_dice"):
        assert k in m, k
    assert [x.step for x in client.get_metric_history(mt, "val_volume_dice_teacher")] == [0, 1]
    assert t["covidseg.model_uri"].startswith("models:/")
