"""``pseudolabel``: soft pseudo-labels for unlabelled CT patches (thesis 5.3.4).

1. a box per unlabelled volume — from a coarse 3D U-Net run (``coarse_model``) or, without one,
   the lung mask (recorded as tag ``covidseg.coarse``) — enlarged by up to 15 px;
2. patches: ``labelled_patches`` from the labelled non-test volumes inside their lesion boxes
   (enlarged by up to 10 px), ``patches_per_volume`` per unlabelled volume inside its box;
3. features: the fine-tuned model's encoder + global average pooling;
4. assignment by cosine similarity (:mod:`covidseg.semi.assign`).

Logs the similarity histogram, example patches with their pseudo masks, counts and acceptance
rate, and the pseudo-labelled set (``pseudo/pseudo_labels.npz``) that ``meanteacher`` reads.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from covidseg.config import PseudolabelConfig
from covidseg.data.store import open_dataset
from covidseg.device import resolve_device
from covidseg.errors import ConfigError
from covidseg.inference import predict_volume
from covidseg.models.checkpoint import load_model
from covidseg.semi import figures
from covidseg.semi.assign import assign_pseudo_labels
from covidseg.semi.encode import encode_patches
from covidseg.semi.patches import box_of, sample_labelled, sample_unlabelled
from covidseg.tracking import NullTracker, download_model
from covidseg.train.stage import workdir_for

log = logging.getLogger("covidseg.pseudolabel")

PSEUDO_FILE = "pseudo_labels.npz"


def coarse_boxes(ds, case_ids, coarse_model, device) -> tuple[dict, dict]:
    """Box per volume from the coarse model's mask (else the lung mask, else the foreground);
    returns (boxes, how each was found)."""
    boxes, source = {}, {}
    for c in case_ids:
        image, _, lung = ds.load(c)
        box = None
        if coarse_model is not None:
            box = box_of(predict_volume(coarse_model, np.asarray(image), device) > 0.5)
            source[c] = "coarse-3d" if box else "coarse-3d empty: lung mask"
        if box is None and lung is not None:
            box = box_of(np.asarray(lung))
            source.setdefault(c, "lung-mask")
        if box is None:
            box = box_of(np.asarray(image) != 0) or (0, image.shape[0], 0, image.shape[1], 0, image.shape[2])
            source.setdefault(c, "foreground")
        boxes[c] = box
    return boxes, source


def pseudolabel(cfg: PseudolabelConfig, tracker=None) -> dict:
    tracker = tracker or NullTracker()
    device = resolve_device(cfg.device)
    rng = np.random.default_rng(cfg.seed)
    model_dir, model_run = download_model(cfg.model)
    tracker.link_source("model", model_run)
    model, config = load_model(model_dir)
    ds = open_dataset(cfg.data, tracker)
    if config.get("dataset_key") and config["dataset_key"] != ds.key:
        log.warning("the model was trained on dataset %s, the labelled patches come from %s",
                    config["dataset_key"], ds.key)
    uds = ds
    if cfg.unlabelled:
        uds = open_dataset(cfg.unlabelled, NullTracker())
        tracker.set_tags({"covidseg.unlabelled_dataset": uds.key})
    unlabelled_ids = uds.splits["unlabelled"] if uds is ds else uds.ids()
    if not unlabelled_ids:
        raise ConfigError("no unlabelled volumes: give unlabelled=<preprocess run id or folder>")
    test = set(ds.splits["test"])
    labelled_ids = [c for c in ds.ids(labelled=True) if c not in test
                    and ds.cases[c].get("task", "infection") == "infection"]

    coarse = None
    if cfg.coarse_model:
        coarse_dir, coarse_run = download_model(cfg.coarse_model)
        tracker.link_source("coarse_model", coarse_run)
        coarse, coarse_cfg = load_model(coarse_dir)
        if coarse_cfg["model"]["arch"] != "unet3d":
            raise ConfigError(f"coarse_model={cfg.coarse_model} is a {coarse_cfg['model']['arch']} "
                              "model; expected arch=unet3d")
        coarse = coarse.to(device)
    boxes, box_source = coarse_boxes(uds, unlabelled_ids, coarse, device)
    tracker.set_tags({"covidseg.coarse": "unet3d" if coarse is not None else "lung-mask"})

    lab = sample_labelled(ds, labelled_ids, cfg.labelled_patches, cfg.patch_size, 10, rng)
    if not len(lab):
        raise ConfigError("no labelled non-test volume with lesion to sample patches from")
    unl = sample_unlabelled(uds, boxes, cfg.patches_per_volume, cfg.patch_size, 15, rng)
    lab_feats = encode_patches(model, lab.images, device)
    unl_feats = encode_patches(model, unl.images, device)
    a = assign_pseudo_labels(unl_feats, lab_feats, lab.masks, cfg.rule, cfg.sim_low, cfg.sim_high,
                             cfg.sim_min)

    metrics = {"n_labelled_patches": len(lab), "n_unlabelled_patches": len(unl),
               "n_unlabelled_volumes": len(unlabelled_ids), "n_accepted": len(a.accepted),
               "acceptance_rate": a.acceptance_rate,
               "similarity_top1_mean": float(a.top_sim[:, 0].mean()),
               "similarity_top1_min": float(a.top_sim[:, 0].min()),
               "similarity_top1_max": float(a.top_sim[:, 0].max()),
               "pseudo_lesion_fraction": float(a.masks.mean()) if len(a.accepted) else 0.0,
               "n_boxes_from_coarse": sum(v == "coarse-3d" for v in box_source.values())}
    tracker.log_metrics(metrics)
    tracker.log_figure(figures.similarity_histogram(a.top_sim[:, 0], cfg), "figures/similarity_histogram.png")
    tracker.log_figure(figures.example_patches(unl.images, a, lab), "figures/pseudo_label_examples.png")
    out = workdir_for(tracker.run_id) / PSEUDO_FILE
    np.savez_compressed(
        out, images=unl.images[a.accepted], masks=a.masks, weights=a.weights,
        case_ids=np.array([unl.case_ids[i] for i in a.accepted], dtype=str),
        coords=unl.coords[a.accepted] if len(a.accepted) else np.zeros((0, 3), int),
        unlabelled_images=unl.images, top_similarity=a.top_sim, patch_size=cfg.patch_size,
        dataset_key=ds.key)
    tracker.log_artifact(out, "pseudo")
    accepted = set(a.accepted.tolist())
    rows = [{"case_id": unl.case_ids[i], "z": int(unl.coords[i][0]), "y": int(unl.coords[i][1]),
             "x": int(unl.coords[i][2]), "similarity_1": float(a.top_sim[i, 0]),
             "similarity_2": float(a.top_sim[i, 1]),
             "label_from": f"{lab.case_ids[a.top_idx[i, 0]]}@z{lab.coords[a.top_idx[i, 0]][0]}",
             "accepted": i in accepted, "box": box_source[unl.case_ids[i]]}
            for i in range(len(unl))]
    tracker.log_table(rows, "pseudo/patches.csv")
    return {"accepted": len(a.accepted), "of": len(unl),
            "acceptance_rate": round(a.acceptance_rate, 3), "pseudo_file": str(out)}


def load_pseudo_set(ref: str) -> tuple[dict, str | None]:
    """The pseudo-labelled set of a pseudolabel run id (or a local ``.npz``); (arrays, run id)."""
    path = Path(ref).expanduser()
    run_id = None
    if not path.is_file():
        from covidseg.tracking import (
            download_run_artifacts,
            is_run_ref,
            resolve_run_ref,
        )

        if not is_run_ref(ref):
            raise ConfigError(f"pseudo={ref!r} is not a pseudolabel run id or an .npz file")
        run_id, _ = resolve_run_ref(ref)
        path = download_run_artifacts(run_id, f"pseudo/{PSEUDO_FILE}")
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}, run_id
