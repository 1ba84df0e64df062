"""finetune → (coarse 3D U-Net) → pseudolabel → meanteacher through ``mlflow run`` against a real
server, lineage tags linking the runs, the pseudo-labelled set and figures logged."""

import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FAST, mlflow_run, run


def check_acceptance(client, run_id, rule, accept_fraction, tmp_path):
    """What a similarity pseudolabel run accepted, checked against its own per-patch table: the
    ``accept_fraction`` of the patches with the highest score (the top similarity for top1-band,
    the second one for top2-weighted) and none below the logged cut; each accepted item's weight
    is the top similarity (top1-band) or the mean of the two (top2-weighted)."""
    m = client.get_run(run_id).data.metrics
    path = client.download_artifacts(run_id, "pseudo/patches.csv", str(tmp_path / run_id))
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == m["n_unlabelled_patches"] == m["n_candidates"]
    accepted = [r for r in rows if r["accepted"] == "True"]
    rejected = [r for r in rows if r["accepted"] == "False"]
    assert len(accepted) + len(rejected) == len(rows)
    assert len(accepted) == m["n_accepted"] == round(accept_fraction * len(rows)) > 0
    column, cut = (("similarity_1", m["band_sim_low"]) if rule == "top1-band"
                   else ("similarity_2", m["band_sim_min"]))
    lowest_accepted = min(float(r[column]) for r in accepted)
    assert lowest_accepted == pytest.approx(cut, abs=1e-6)
    assert all(float(r[column]) <= lowest_accepted for r in rejected)
    local = Path(client.download_artifacts(run_id, "pseudo/pseudo_labels.npz",
                                           str(tmp_path / run_id)))
    s1 = np.array([float(r["similarity_1"]) for r in accepted])
    s2 = np.array([float(r["similarity_2"]) for r in accepted])
    with np.load(local, allow_pickle=False) as z:
        assert list(z["case_ids"]) == [r["case_id"] for r in accepted]
        weights = z["weights"][:, 0, 0]
        assert (z["weights"] == weights[:, None, None]).all()
        expected = s1 if rule == "top1-band" else (s1 + s2) / 2
        np.testing.assert_allclose(weights, expected, atol=1e-6)
        masks = z["masks"]
        if rule == "top1-band":  # one labelled patch's mask, as it is
            assert set(np.unique(masks)) <= {0.0, 1.0}
        assert ((masks >= 0) & (masks <= 1)).all()
    return m, rows


def test_finetune_pseudolabel_meanteacher_chain(tracking_uri, preprocess_run, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    ft = mlflow_run("finetune", {"data": preprocess_run, "epochs": 2, **FAST}, tmp_path,
                    tracking_uri, "semi")
    r = run(["covidseg", "finetune", "--data", preprocess_run, "--arch", "unet3d", "--epochs", "2",
             "--lr", "1e-3", "--warmup", "0", "--experiment", "semi"], tmp_path,
            MLFLOW_TRACKING_URI=tracking_uri)
    assert r.returncode == 0, r.stderr[-3000:]
    done = re.search(r"^covidseg finetune: done .*\bmodel_uri=(models:/\S+)", r.stdout, re.M)
    assert done, r.stdout[-2000:]
    coarse_runs = client.search_runs([client.get_experiment_by_name("semi").experiment_id],
                                     filter_string="tags.`covidseg.arch` = 'unet3d'")
    assert len(coarse_runs) == 1 and coarse_runs[0].info.status == "FINISHED"
    assert coarse_runs[0].data.tags["covidseg.model_uri"] == done.group(1)
    coarse_run = coarse_runs[0].info.run_id
    # the printed link opens the run in the UI's training view, even in a fresh browser (whose
    # sidebar would default to the GenAI view: MLflow issue #24498)
    ui = re.search(r"^covidseg finetune: done .*\bui=(\S+)", r.stdout, re.M).group(1)
    assert ui.endswith(f"/runs/{coarse_run}?workflowType=machine_learning"), ui
    if shutil.which("chromium"):
        from tests.helpers import chromium

        dom = chromium(ui, tmp_path / "fresh-browser")
        assert coarse_runs[0].info.run_name in dom and "val_volume_dice" in dom
        assert "Sessions" not in dom and "Detect Issues" not in dom  # no GenAI sidebar, overview
    pl = mlflow_run("pseudolabel", {"data": preprocess_run, "model": ft, "coarse_model": coarse_run,
                                    "source": "similarity", "patches_per_volume": 16,
                                    "labelled_patches": 40, "accept_fraction": 0.25},
                    tmp_path, tracking_uri, "semi")
    p = client.get_run(pl)
    t, m = p.data.tags, p.data.metrics
    assert t["covidseg.source.model"] == ft and t["covidseg.source.coarse_model"] == coarse_run
    assert t["covidseg.source.data"] == preprocess_run and t["covidseg.coarse"] == "unet3d"
    assert t["covidseg.pseudo_source"] == "similarity"
    # the patch side follows the 64-px slices (68 px per 512, at least 16); a patch that would lie
    # mostly off tissue is dropped, and the run says how many were
    size, n_unl = int(m["patch_size_px"]), int(m["n_unlabelled_patches"])
    assert size == 16 and m["patches_in_padding"] == 0
    assert n_unl + m["n_labelled_patches"] + m["patches_dropped_off_tissue"] == 3 * 16 + 40
    assert n_unl > 3 * 8 and m["n_labelled_patches"] > 20
    assert m["n_accepted"] == round(0.25 * n_unl)  # the quantile band: top 25 %
    assert m["band_sim_low"] <= m["band_sim_high"] == pytest.approx(m["similarity_top1_max"])
    check_acceptance(client, pl, "top1-band", 0.25, tmp_path)
    # the demo phantoms know the unlabelled lesions: the run scores its labels against them
    assert t["covidseg.oracle"] == "true"
    assert m["oracle_pseudo_items"] == m["n_accepted"]
    assert m["oracle_rejected_items"] == n_unl - m["n_accepted"]
    assert 0.0 <= m["oracle_pseudo_dice"] <= 1.0 and "oracle_accepted_lesion_fraction" in m
    names = {Path(a.path).name for a in client.list_artifacts(pl, "figures")}
    assert names == {"similarity_histogram.png", "pseudo_label_examples.png", "patch_centres.png"}
    local = Path(client.download_artifacts(pl, "pseudo/pseudo_labels.npz", str(tmp_path)))
    with np.load(local, allow_pickle=False) as z:
        shape = (m["n_accepted"], size, size)
        assert z["images"].shape == shape and z["masks"].shape == shape
        assert str(z["source"]) == "similarity"

    # the other rule with the default band (quantile) and fraction (20 %), lung-mask boxes
    p2 = mlflow_run("pseudolabel", {"data": preprocess_run, "model": ft, "source": "similarity",
                                    "rule": "top2-weighted", "patches_per_volume": 16,
                                    "labelled_patches": 40},
                    tmp_path, tracking_uri, "semi")
    t2 = client.get_run(p2).data.tags
    assert t2["covidseg.coarse"] == "lung-mask" and t2["covidseg.pseudo_source"] == "similarity"
    m2, _ = check_acceptance(client, p2, "top2-weighted", 0.2, tmp_path)
    assert m2["n_accepted"] == round(0.2 * m2["n_unlabelled_patches"])
    assert "band_sim_low" not in m2

    # self-training pseudo-labels (the default source): whole slices from the network itself
    pm = mlflow_run("pseudolabel", {"data": preprocess_run, "model": ft}, tmp_path, tracking_uri,
                    "semi")
    m = client.get_run(pm).data.metrics
    assert client.get_run(pm).data.tags["covidseg.pseudo_source"] == "model"
    assert m["n_accepted"] > 0 and 0 < m["confident_pixel_fraction"] <= 1
    assert "oracle_pseudo_dice_pooled" in m
    names = {Path(a.path).name for a in client.list_artifacts(pm, "figures")}
    assert names == {"pseudo_label_examples.png"}
    # the oracle (the upper bound of the label-efficiency sweep): the phantoms' true masks
    po = mlflow_run("pseudolabel", {"data": preprocess_run, "model": ft, "source": "oracle"},
                    tmp_path, tracking_uri, "semi")
    mo = client.get_run(po).data.metrics
    assert client.get_run(po).data.tags["covidseg.pseudo_source"] == "oracle"
    assert mo["oracle_pseudo_dice_pooled"] == pytest.approx(1.0) and mo["n_accepted"] > 0

    # the online method (the mean teacher's own consistency runs in the label-efficiency sweep);
    # an untrained teacher is sure of little: confidence 0.6 gives it targets to teach
    mt = mlflow_run("meanteacher", {"data": preprocess_run, "model": ft, "pseudo": pm, "epochs": 2,
                                    "rampup_epochs": 1, "batch_size": 8, "workers": 0,
                                    "iterations_per_epoch": 6, "warmup": 0,
                                    "method": "unimatch", "target_confidence": 0.6},
                    tmp_path, tracking_uri, "semi")  # no encoder: the student is ft's network
    r = client.get_run(mt)
    t, m = r.data.tags, r.data.metrics
    assert t["covidseg.source.model"] == ft and t["covidseg.source.pseudo"] == pm
    assert t["covidseg.pseudo_source"] == "model" and t["covidseg.semi_method"] == "unimatch"
    # its description (the UI's) points at the curves that matter and says which weights it kept
    assert "figures/training_curves.png" in t["mlflow.note.content"]
    assert "kept weights:" in t["mlflow.note.content"]
    assert t["covidseg.best_network"] in ("student", "teacher")
    for k in ("val_volume_dice_student", "val_volume_dice_teacher", "loss_consistency",
              "loss_pseudo", "test_volume_dice", "start_val_volume_dice",
              "confident_lesion_share", "confident_background_share",
              "oracle_confident_precision", "oracle_confident_recall"):
        assert k in m, k
    # the fine-tuned model was scored before the first step; the run keeps the better
    assert m["best_val_volume_dice"] >= m["start_val_volume_dice"] - 1e-9
    shares = m["confident_lesion_share"] + m["confident_background_share"]
    assert 0 < shares <= 1
    assert [x.step for x in client.get_metric_history(mt, "val_volume_dice_teacher")] == [0, 1]
    # epoch 1 is past the ramp-up: the consistency term on whole unlabelled slices is active
    assert m["unlabelled_slices"] > 0 and m["pseudo_items"] > 0
    assert client.get_metric_history(mt, "loss_consistency")[-1].value > 0
    assert t["covidseg.model_uri"].startswith("models:/")
