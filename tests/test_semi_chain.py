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
                                    "source": "similarity", "patches_per_volume": 16,
                                    "labelled_patches": 40, "patch_size": 32,
                                    "accept_fraction": 0.25},
                    tmp_path, tracking_uri, "semi")
    p = client.get_run(pl)
    t, m = p.data.tags, p.data.metrics
    assert t["covidseg.source.model"] == ft and t["covidseg.source.coarse_model"] == coarse_run
    assert t["covidseg.source.data"] == preprocess_run and t["covidseg.coarse"] == "unet3d"
    assert t["covidseg.pseudo_source"] == "similarity"
    assert m["n_unlabelled_patches"] == 3 * 16 and m["n_labelled_patches"] == 40
    assert m["n_accepted"] == 12 and m["acceptance_rate"] == 0.25  # the quantile band: top 25 %
    assert m["band_sim_low"] <= m["band_sim_high"]
    # the demo phantoms know the unlabelled lesions: the run scores its labels against them
    assert t["covidseg.oracle"] == "true"
    assert m["oracle_pseudo_items"] == 12 and m["oracle_rejected_items"] == 36
    assert 0.0 <= m["oracle_pseudo_dice"] <= 1.0 and "oracle_accepted_lesion_fraction" in m
    names = {Path(a.path).name for a in client.list_artifacts(pl, "figures")}
    assert names == {"similarity_histogram.png", "pseudo_label_examples.png", "patch_centres.png"}
    local = Path(client.download_artifacts(pl, "pseudo/pseudo_labels.npz", str(tmp_path)))
    with np.load(local, allow_pickle=False) as z:
        assert z["images"].shape == (12, 32, 32) and z["masks"].shape == (12, 32, 32)
        assert str(z["source"]) == "similarity"
        assert ((z["weights"] >= -1) & (z["weights"] <= 1)).all()
    assert "accepted" in Path(client.download_artifacts(pl, "pseudo/patches.csv", str(tmp_path))).read_text()

    # self-training pseudo-labels (the default source): whole slices from the network itself
    pm = mlflow_run("pseudolabel", {"data": preprocess_run, "model": ft}, tmp_path, tracking_uri,
                    "semi")
    m = client.get_run(pm).data.metrics
    assert client.get_run(pm).data.tags["covidseg.pseudo_source"] == "model"
    assert m["n_accepted"] > 0 and 0 < m["confident_pixel_fraction"] <= 1
    assert "oracle_pseudo_dice_pooled" in m
    names = {Path(a.path).name for a in client.list_artifacts(pm, "figures")}
    assert names == {"pseudo_label_examples.png"}

    mt = mlflow_run("meanteacher", {"data": preprocess_run, "model": ft, "pseudo": pm, "epochs": 2,
                                    "rampup_epochs": 1, "batch_size": 8, "workers": 0},
                    tmp_path, tracking_uri, "semi")  # no encoder: the student is ft's network
    r = client.get_run(mt)
    t, m = r.data.tags, r.data.metrics
    assert t["covidseg.source.model"] == ft and t["covidseg.source.pseudo"] == pm
    assert t["covidseg.pseudo_source"] == "model"
    assert t["covidseg.best_network"] in ("student", "teacher")
    for k in ("val_volume_dice_student", "val_volume_dice_teacher", "loss_consistency",
              "loss_pseudo", "test_volume_dice"):
        assert k in m, k
    assert [x.step for x in client.get_metric_history(mt, "val_volume_dice_teacher")] == [0, 1]
    # epoch 1 is past the ramp-up: the consistency term on whole unlabelled slices is active
    assert m["unlabelled_slices"] > 0 and m["pseudo_items"] > 0
    assert client.get_metric_history(mt, "loss_consistency")[-1].value > 0
    assert t["covidseg.model_uri"].startswith("models:/")
