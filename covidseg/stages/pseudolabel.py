"""``pseudolabel``: pseudo-labels for unlabelled CT, by one of two methods (``source``).

``source=model`` (default; self-training, :mod:`covidseg.semi.selftrain`): the fine-tuned network
predicts whole unlabelled slices; confident pixels are kept, weighted by confidence.

``source=similarity`` (the thesis, 5.3.4):

1. a box per unlabelled volume — from a coarse 3D U-Net run (``coarse_model``) or, without one,
   the lung mask (recorded as tag ``covidseg.coarse``) — enlarged by up to 15 px;
2. patches on tissue (:mod:`covidseg.semi.patches`): ``labelled_patches`` from the labelled
   non-test volumes inside their lesion boxes (enlarged by up to 10 px), ``patches_per_volume``
   per unlabelled volume inside its box;
3. features: the fine-tuned model's encoder + global average pooling (``feature=gap-raw``, the
   thesis) or the same centred on the labelled dictionary (``gap-centred``,
   :mod:`covidseg.semi.encode`);
4. assignment by cosine similarity (:mod:`covidseg.semi.assign`), with the thesis's absolute band
   or a quantile band.

When the unlabelled cases carry an oracle truth (the demo phantoms), the run scores what it
produced against it (:mod:`covidseg.semi.oracle`: ``oracle_pseudo_*`` for the accepted labels,
``oracle_rejected_*`` for the rest) and is tagged ``covidseg.oracle=true``.  The truth never
enters the pseudo-labelled set.

Logs counts and acceptance, the figures (similarity histogram, examples, patch-centre heat map)
and the pseudo-labelled set (``pseudo/pseudo_labels.npz``, :class:`PseudoSet`) that
``meanteacher`` reads.
"""

from __future__ import annotations

import logging

import numpy as np

from covidseg.base.device import resolve_device
from covidseg.base.errors import ConfigError
from covidseg.config import PseudolabelConfig
from covidseg.data.slices import pad_to
from covidseg.inference import predict_volume
from covidseg.models.checkpoint import load_model
from covidseg.semi import figures
from covidseg.semi.assign import assign_pseudo_labels
from covidseg.semi.encode import patch_features
from covidseg.semi.oracle import oracle_metrics, oracle_scores
from covidseg.semi.patches import (
    box_of,
    count_in_padding,
    cut_truth,
    patch_side,
    sample_labelled,
    sample_unlabelled,
)
from covidseg.semi.pseudoset import PSEUDO_FILE, PseudoSet, pseudo_source
from covidseg.semi.selftrain import model_pseudo_labels
from covidseg.stages.datasets import open_dataset
from covidseg.stages.results import PseudolabelResult, rounded
from covidseg.stages.stage import workdir_for
from covidseg.tracking import NullTracker, Tag, download_model
from covidseg.train.supervised import trained_split

log = logging.getLogger("covidseg.pseudolabel")


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
            whole = (0, image.shape[0], 0, image.shape[1], 0, image.shape[2])
            box = box_of(np.asarray(image) != 0) or whole
            source.setdefault(c, "foreground")
        boxes[c] = box
    return boxes, source


def _unlabelled(cfg, ds, tracker):
    uds = ds
    if cfg.unlabelled:
        uds = open_dataset(cfg.unlabelled, NullTracker())
        tracker.set_tags({Tag.UNLABELLED_DATASET: uds.key})
    ids = uds.splits.unlabelled if uds is ds else uds.ids()
    if not ids:
        raise ConfigError("no unlabelled volumes: give unlabelled=<preprocess run id or folder>")
    return uds, ids


def pseudolabel(cfg: PseudolabelConfig, tracker=None) -> PseudolabelResult:
    tracker = tracker or NullTracker()
    device = resolve_device(cfg.device)
    model_dir, model_run = download_model(cfg.model)
    tracker.link_source("model", model_run)
    model, config = load_model(model_dir, single=True)
    ds = open_dataset(cfg.data, tracker)
    multiclass = ds.descriptor["config"].get("labels") == "multiclass"
    if config["model"].get("classes", 1) > 1 or multiclass:
        raise ConfigError("pseudolabel makes binary lesion labels: a multi-class model "
                          "(labels=multiclass) is not supported")
    if config.get("dataset_key") and config["dataset_key"] != ds.key:
        log.warning("the model was trained on dataset %s, the labelled patches come from %s",
                    config["dataset_key"], ds.key)
    uds, unlabelled_ids = _unlabelled(cfg, ds, tracker)
    has_truth = [c for c in unlabelled_ids if uds.meta(c).has_truth]
    truth_of = uds.load_truth if len(has_truth) == len(unlabelled_ids) else None
    meta = {"dataset_key": ds.key, "unlabelled_data": cfg.unlabelled}
    tracker.set_tags({Tag.PSEUDO_SOURCE: cfg.source})
    if cfg.source == "oracle" and truth_of is None:
        raise ConfigError("source=oracle needs unlabelled cases that carry their true masks (the "
                          "demo phantoms do): these do not")
    if pseudo_source(cfg.source).whole_slices:
        pset, metrics, oracle = _from_model(cfg, model, uds, unlabelled_ids, device, truth_of, meta,
                                            tracker)
    else:
        split = trained_split(ds, config)
        if split is None:
            log.warning("the model's training split is unknown (another dataset, or no fold "
                        "recorded): labelled patches come from every labelled non-test case")
        pset, metrics, oracle = _from_similarity(cfg, model, ds, uds, unlabelled_ids, device,
                                                 truth_of, meta, tracker,
                                                 split[0] if split else None)
    metrics["n_unlabelled_volumes"] = len(unlabelled_ids)
    if oracle:
        metrics.update(oracle)
        tracker.set_tags({Tag.ORACLE: "true"})
    tracker.log_metrics(metrics)
    out = pset.save(workdir_for(tracker.run_id) / PSEUDO_FILE)
    tracker.log_artifact(out, "pseudo")
    return PseudolabelResult(source=cfg.source, accepted=int(metrics["n_accepted"]),
                             candidates=int(metrics["n_candidates"]),
                             acceptance_rate=round(metrics["acceptance_rate"], 3),
                             pseudo_file=str(out),
                             oracle_dice_pooled=rounded(metrics.get("oracle_pseudo_dice_pooled")),
                             run_id=tracker.run_id)


def _from_similarity(cfg, model, ds, uds, unlabelled_ids, device, truth_of, meta, tracker,
                     trained_on: list[str] | None = None):
    """Similarity pseudo-labels; the labelled masks come from ``trained_on`` (the model's training
    cases: never its validation fold) when known, else from every labelled non-test case."""
    rng = np.random.default_rng(cfg.seed)
    test = set(ds.splits.test)
    allowed = set(trained_on) if trained_on is not None else None
    labelled_ids = [c for c in ds.ids(labelled=True) if c not in test
                    and (ds.meta(c).task or "infection") == "infection"
                    and (allowed is None or c in allowed)]
    coarse = None
    if cfg.coarse_model:
        coarse_dir, coarse_run = download_model(cfg.coarse_model)
        tracker.link_source("coarse_model", coarse_run)
        coarse, coarse_cfg = load_model(coarse_dir, single=True)
        if coarse_cfg["model"]["arch"] != "unet3d":
            raise ConfigError(f"coarse_model={cfg.coarse_model} is a {coarse_cfg['model']['arch']} "
                              "model; expected arch=unet3d")
        coarse = coarse.to(device)
    boxes, box_source = coarse_boxes(uds, unlabelled_ids, coarse, device)
    tracker.set_tags({Tag.COARSE: "unet3d" if coarse is not None else "lung-mask"})

    size = patch_side(cfg.patch_size, int(np.median([max(uds.meta(c).shape[1:])
                                                     for c in unlabelled_ids])))
    lab = sample_labelled(ds, labelled_ids, cfg.labelled_patches, size, 10, rng, cfg.min_tissue)
    if not len(lab):
        raise ConfigError("no labelled training volume with lesion to sample patches from "
                          f"(patches of {size} px with at least {cfg.min_tissue:.0%} on tissue)")
    unl = sample_unlabelled(uds, boxes, cfg.patches_per_volume, size, 15, rng, cfg.min_tissue)
    if not len(unl):
        raise ConfigError(f"no patch of {size} px lies on tissue (min_tissue={cfg.min_tissue}) "
                          "in the unlabelled volumes: lower patch_size or min_tissue")
    lab_feats, unl_feats = patch_features(model, lab.images, unl.images, device, cfg.feature)
    a = assign_pseudo_labels(unl_feats, lab_feats, lab.masks, cfg.rule, cfg.sim_low, cfg.sim_high,
                             cfg.sim_min, band=cfg.band, accept_fraction=cfg.accept_fraction)
    metrics = {"n_labelled_patches": len(lab), "n_unlabelled_patches": len(unl),
               "patch_size_px": size,
               "patches_dropped_off_tissue": (cfg.patches_per_volume * len(boxes) - len(unl)
                                              + cfg.labelled_patches - len(lab)),
               "n_candidates": len(unl), "n_accepted": len(a.accepted),
               "acceptance_rate": a.acceptance_rate,
               "similarity_top1_mean": float(a.top_sim[:, 0].mean()),
               "similarity_top1_min": float(a.top_sim[:, 0].min()),
               "similarity_top1_max": float(a.top_sim[:, 0].max()),
               "pseudo_lesion_fraction": float(a.masks.mean()) if len(a.accepted) else 0.0,
               "patches_in_padding": count_in_padding(unl),
               "patch_tissue_fraction_mean": float(np.mean(unl.tissue)),
               "n_boxes_from_coarse": sum(v == "coarse-3d" for v in box_source.values()),
               **{f"band_{k}": v for k, v in a.thresholds.items()}}
    oracle = {}
    if truth_of is not None:
        truth = cut_truth(truth_of, unl)
        rejected = np.setdiff1d(np.arange(len(unl)), a.accepted)
        would_be = np.asarray(lab.masks, np.float32)[a.top_idx[rejected, 0]]
        oracle = oracle_metrics(oracle_scores(a.masks, truth[a.accepted]),
                                oracle_scores(would_be, truth[rejected]))
    tracker.figure("figures/similarity_histogram.png", figures.similarity_histogram,
                   a.top_sim[:, 0], a.thresholds, band=cfg.band, rule=cfg.rule,
                   feature=cfg.feature, accept_fraction=cfg.accept_fraction)
    tracker.figure("figures/pseudo_label_examples.png", figures.example_patches, unl.images, a, lab)
    tracker.figure("figures/patch_centres.png", figures.patch_centres, uds, unl)
    accepted = set(a.accepted.tolist())
    rows = [{"case_id": unl.case_ids[i], "z": int(unl.coords[i][0]), "y": int(unl.coords[i][1]),
             "x": int(unl.coords[i][2]), "tissue_fraction": round(float(unl.tissue[i]), 3),
             "similarity_1": float(a.top_sim[i, 0]), "similarity_2": float(a.top_sim[i, 1]),
             "label_from": f"{lab.case_ids[a.top_idx[i, 0]]}@z{lab.coords[a.top_idx[i, 0]][0]}",
             "accepted": i in accepted, "box": box_source[unl.case_ids[i]]}
            for i in range(len(unl))]
    tracker.log_table(rows, "pseudo/patches.csv")
    k = a.accepted
    pset = PseudoSet(unl.images[k] if len(k) else np.zeros((0, size, size), np.float32),
                     a.masks.reshape(-1, size, size),
                     np.broadcast_to(a.weights[:, None, None],
                                     (len(k), size, size)).astype(np.float32),
                     np.array([unl.case_ids[i] for i in k], dtype=str),
                     unl.coords[k] if len(k) else np.zeros((0, 3), int), "similarity", **meta)
    return pset, metrics, oracle


def _from_model(cfg, model, uds, unlabelled_ids, device, truth_of, meta, tracker):
    """Whole-slice pseudo-labels from the network (``source=model``), or the true masks of the
    unlabelled cases in their place (``source=oracle``: the upper bound)."""
    items = model_pseudo_labels(model, uds, unlabelled_ids, device, cfg.confidence,
                                truth_of=truth_of if pseudo_source(cfg.source).truth else None)
    n_slices = sum(int(uds.meta(c).shape[0]) for c in unlabelled_ids)
    n = len(items["images"])
    if n == 0:
        pset = PseudoSet.empty(32, source=cfg.source, **meta)
        return pset, {"n_candidates": n_slices, "n_accepted": 0, "acceptance_rate": 0.0,
                      "confident_pixel_fraction": 0.0}, {}
    H, W = items["images"].shape[1:]
    inside = np.stack([pad_to(np.ones(uds.meta(c).shape[1:], bool), (H, W))
                       for c in items["case_ids"]])
    accepted_px = items["weights"] > 0
    metrics = {"n_candidates": n_slices, "n_accepted": n, "acceptance_rate": n / max(1, n_slices),
               "confident_pixel_fraction": float(accepted_px.sum() / inside.sum()),
               "pseudo_lesion_fraction": float(items["masks"][accepted_px].mean()),
               "confidence_threshold": cfg.confidence}
    oracle = {}
    if truth_of is not None:
        truth = np.stack([pad_to(np.asarray(truth_of(c)[z], np.uint8), (H, W))
                          for c, (z, _, _) in zip(items["case_ids"], items["coords"])])
        oracle = oracle_metrics(oracle_scores(items["masks"], truth, accepted_px),
                                oracle_scores(items["masks"], truth, inside & ~accepted_px))
    tracker.figure("figures/pseudo_label_examples.png", figures.model_examples, items)
    pset = PseudoSet(items["images"], items["masks"], items["weights"],
                     np.array(items["case_ids"], dtype=str), items["coords"], cfg.source, **meta)
    return pset, metrics, oracle
