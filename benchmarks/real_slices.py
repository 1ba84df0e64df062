"""covidseg's training recipe on real CT slices: 5-fold cross-validation of (a) covidseg's
defaults, (b) the thesis's settings and (c) a bare smp loop, on the same folds, with the same
initial weights and the same number of optimiser steps.

    python benchmarks/real_slices.py --data ../shared/data/covid-ct-slices          # 2-core CPU
    python benchmarks/real_slices.py --data ../shared/data/covid-ct-slices \\
        --size 384 --steps 0 --device cuda                                         # GPU, full size

The labelled slices of ``--data`` (``labelled/images`` + ``labelled/masks``, or ``train/…``; the
folder is only read, never copied) are preprocessed by covidseg once (each slice resized so its
longer side is ``--size``, z-scored; no test set held out) and split into ``--k`` folds by
``--split_seed``.  For each fold in ``--folds``, each arm trains on the other folds and is scored
on that fold — nothing of the scored fold chooses anything for (a) (it keeps its last weights) or
(c) (constant lr, last weights); (b) keeps its best epoch *by the scored fold* (the thesis's
early stopping), which favours it:

* **covidseg** — ``finetune`` with its defaults (``--set key=value`` overrides one, e.g. to
  measure a candidate), ``epochs × iterations_per_epoch`` = ``--steps``;
* **thesis** — ``finetune -P recipe=thesis`` (Adam 2e-4, StepLR, one pass an epoch, per-sample
  Dice, mild augmentation, best epoch, early stop after 30), as many epochs as make ``--steps``;
* **bare** — the textbook smp loop of ``slice_baseline.py`` (images /255, letterboxed to
  ``--size``, ``A.Affine`` rotation ±10° / scale 0.9-1.1, BCE + Dice, Adam at a constant
  ``--bare_lr``, the final weights), ``--steps`` steps.

Every arm starts from the same initial weights (torch seeded alike before the network is built)
and takes ``--steps`` steps of ``--batch_size`` slices.  Each slice of the scored fold is scored by
the same code at its **original size** (the probability map resized back): Dice at 0.5 (at the
model's threshold for covidseg) and the threshold-averaged Dice of Inf-Net's EvaluationTool
(``meanDic``: the map min-max normalised, 256 thresholds).  Printed: per fold and overall means,
the paired per-slice differences (a) − (c) and (a) − (b) with a 95 % interval (t over the slices;
and the per-fold means), what test-time mirroring changes for (a)'s models (each scored both
ways: inference only, no training), each arm's pixel calibration over its out-of-fold slices
(expected calibration error, mean probability on lesion pixels, share of background pixels at
p ≤ 0.03), and the ratios.  ``--out FILE`` writes every slice's scores
as JSON.

``--steps 0``: the plan's number of steps for these slices (what ``finetune`` would run).

**Unlabelled slices** (``--arms`` with any of ``continued,meanteacher,unimatch``; the folder's
``unlabelled/`` images are preprocessed with the labelled ones): each starts from arm (a)'s model
of the fold and trains ``--semi_steps`` more steps (0: the plan's — at least 20 passes over the
unlabelled slices) with ``meanteacher``'s defaults (``--semi_set key=value`` overrides one):

* **meanteacher** — ``meanteacher -P method=meanteacher`` (consistency with the EMA teacher);
* **unimatch** — ``meanteacher -P method=unimatch`` (confident weak-to-strong targets);
* **continued** — the control: the same task with no unlabelled term (``consistency_weight=0``)
  for ``--continued_factor`` × ``--semi_steps`` steps — as many student images as the mean
  teacher processes (a labelled and an unlabelled batch a step); "trained longer" is told apart.

Printed as well: each semi arm − (a), and − continued, paired slice by slice.

``--combine OUT…`` trains nothing: it reports the ``--out`` files of runs made apart (each fold or
arm its own process, e.g. eight at a time on one GPU) as one run — the same tables, paired
differences (joined slice by slice) and calibration (``--out`` keeps each arm's pixel counts).
The runs must share the data, split, seeds, size, steps, batch and encoder, arm (a) its
``--set`` and (c) its ``--bare_lr``, and every arm must cover the same folds.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
from bench import header, ratios, table
from slice_baseline import letterbox, read_gray, read_mask, train_bare

ARMS = ("covidseg", "thesis", "bare")
SEMI_ARMS = ("continued", "meanteacher", "unimatch")  # each starts from (a)'s model of the fold
# the covidseg arm's model scored once more with test-time mirroring switched (on → off, off → on)
MIRROR_ARM = {True: "covidseg with tta", False: "covidseg without tta"}
# lesion targets p ≥ t: how right (precision) and how complete (recall) the out-of-fold ones are
CONFIDENT = (0.5, 0.7, 0.9)


def parse_sets(items: list[str], entry: str = "finetune") -> dict:
    """``key=value`` overrides of covidseg's ``entry`` parameters (typed by its config)."""
    from dataclasses import fields

    from covidseg.config import CONFIGS, parse_value

    known = {f.name: f for f in fields(CONFIGS[entry])}
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in known:
            raise SystemExit(f"--set {key}: not a {entry} parameter")
        out[key] = parse_value(known[key], value)
    return out


def preprocess(folder: Path, args, size: int, unlabelled: bool = False) -> str:
    """covidseg's preprocessing of the labelled slices at ``size`` (no test set, ``--k`` folds:
    the same folds at any size); ``unlabelled``: the folder's unlabelled slices too."""
    from covidseg.config import PreprocessConfig
    from covidseg.data.layouts import folder_patterns
    from covidseg.stages.preprocess import preprocess_dataset

    patterns = folder_patterns(folder)
    if not patterns:
        raise SystemExit(f"{folder}: no labelled/images + labelled/masks (or train/…) folders")
    if unlabelled and not patterns.get("unlabelled"):
        raise SystemExit(f"{folder}: no unlabelled/ images for the semi-supervised arms")
    cfg = PreprocessConfig(data=str(folder), dataset="glob", images=patterns["images"],
                           masks=patterns["masks"], image_size=size, test_cases=0,
                           folds=args.k, seed=args.split_seed, lung_method="none",
                           unlabelled=patterns["unlabelled"] if unlabelled else "")
    return preprocess_dataset(cfg, progress=False)["dataset_path"]


def scores_at_original_size(prob: np.ndarray, ref: np.ndarray, threshold: float) -> dict:
    """Dice at ``threshold`` and Inf-Net's threshold-averaged Dice of one slice."""
    from covidseg.train.metrics import overlap_metrics, threshold_dice_curve

    return {"dice": overlap_metrics(prob > threshold, ref)["dice"],
            "meandic": float(threshold_dice_curve(prob, ref).mean())}


def covidseg_probabilities(model, ds, case_id: str, device, tta: bool) -> np.ndarray:
    """A preprocessed slice's lesion probability, back at its original size."""
    from covidseg.data.geometry import unresize_slices
    from covidseg.inference import predict_volume

    image = np.asarray(ds.load(case_id)[0], dtype=np.float32)
    prob = predict_volume(model, image, device, 16, tta=tta)
    shape = tuple(ds.cases[case_id]["canonical_geometry"]["size"][1::-1])
    fit = ds.descriptor["config"].get("slice_fit") or "resize"
    return unresize_slices(prob, shape, fit)[0] if prob.shape[1:] != shape else prob[0]


def bare_probabilities(model, record, size: int, device) -> np.ndarray:
    import cv2
    import torch

    image = read_gray(record.image)
    boxed, (y0, x0, nh, nw) = letterbox(image, size, cv2.INTER_AREA)
    model.eval()
    with torch.no_grad():
        x = torch.from_numpy(boxed.astype(np.float32)[None, None] / 255.0).to(device)
        prob = torch.sigmoid(model(x))[0, 0].float().cpu().numpy()[y0:y0 + nh, x0:x0 + nw]
    return cv2.resize(prob, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)


def run_covidseg(dataset: str, fold: int, steps: int, args, recipe: dict,
                 keep: bool = False) -> tuple:
    """finetune on the other folds; (model, threshold, tta, summary, model folder).  The local
    run folder is removed unless ``keep`` (the semi arms start from it; then the caller removes
    it)."""
    from covidseg.config import FinetuneConfig
    from covidseg.stages.finetune import finetune

    cfg = FinetuneConfig(data=dataset, fold=fold, seed=args.seed, batch_size=args.batch_size,
                         encoder=args.encoder, device=args.device, workers=args.workers,
                         checkpoint_every=0, overlays=0, **recipe)
    return trained(finetune(cfg, progress=False), keep)


def run_semi(arm: str, dataset: str, fold: int, start: Path, steps: int, args,
             overrides: dict) -> tuple:
    """``meanteacher`` from ``start`` (arm (a)'s model of the fold) on the other folds and the
    unlabelled slices, ``steps`` steps; ``continued``: no unlabelled term."""
    from covidseg.config import MeanteacherConfig
    from covidseg.stages.meanteacher import meanteacher
    from covidseg.train.plan import ITERATIONS_PER_EPOCH

    per_epoch = int(overrides.get("iterations_per_epoch", min(ITERATIONS_PER_EPOCH, steps)))
    method = ({"consistency_weight": 0.0} if arm == "continued" else {"method": arm})
    cfg = MeanteacherConfig(data=dataset, model=str(start), fold=fold, seed=args.seed,
                            batch_size=args.batch_size, device=args.device, workers=args.workers,
                            checkpoint_every=0, overlays=0, iterations_per_epoch=per_epoch,
                            epochs=epochs_for(steps, per_epoch),
                            **{**overrides, **method})
    return trained(meanteacher(cfg, progress=False), keep=False)


def trained(result, keep: bool) -> tuple:
    """(model, threshold, tta, result, model folder) of a finished local run (its
    :class:`~covidseg.stages.results.TrainedResult`)."""
    import shutil

    from covidseg.models.checkpoint import load_model

    model_dir = Path(result.model_uri)
    model, config = load_model(model_dir)
    if not keep:
        shutil.rmtree(model_dir.parent, ignore_errors=True)  # the local run folder in the cache
    return (model, float(config.get("threshold", 0.5)), bool(config.get("tta")), result,
            model_dir)


def epochs_for(steps: int, per_epoch: int) -> int:
    return max(1, math.ceil(steps / per_epoch))


def paired(a: list[dict], b: list[dict], metric: str) -> tuple[float, float, float]:
    """Mean of ``metric`` a − b and its 95 % t-interval, slice by slice (joined on fold and case:
    both arms must have scored the same slices)."""
    from scipy import stats

    left = {(s["fold"], s["case_id"]): s[metric] for s in a}
    right = {(s["fold"], s["case_id"]): s[metric] for s in b}
    if set(left) != set(right):
        raise SystemExit(f"{a[0]['arm']} and {b[0]['arm']} scored different slices "
                         f"({len(set(left) ^ set(right))} not in both): run both on the same folds")
    d = np.asarray([left[k] - right[k] for k in sorted(left)])
    if len(d) < 2:
        return float(d.mean()), float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def report(per_slice: dict, fold_rows: list[dict], calibration: dict) -> None:
    """The tables, the paired differences and the ratio line of one run or of several combined
    (``per_slice``: arm → every scored slice; ``fold_rows``: one row per fold; ``calibration``:
    arm → its out-of-fold pixels)."""
    folds = [r["fold"] for r in fold_rows]
    columns = dict.fromkeys(k for r in fold_rows for k in r if k not in ("fold", "val_slices"))
    table(fold_rows + [{"fold": "mean", "val_slices": sum(r["val_slices"] for r in fold_rows),
                        **{k: float(np.mean([r[k] for r in fold_rows if k in r]))
                           for k in columns}}],
          floatfmt="{:.4f}")
    table([{"arm": arm, **cal.summary(),
            **{f"lesion_p{round(100 * t)}_{k}": v for t in CONFIDENT
               for k, v in cal.confident_lesion(t).items() if k != "share"}}
           for arm, cal in calibration.items()], floatfmt="{:.4f}")
    out = {}
    for name in MIRROR_ARM.values():
        if per_slice.get(name):
            with_tta = name == MIRROR_ARM[True]
            a, b = per_slice[name], per_slice["covidseg"]
            on, off = (a, b) if with_tta else (b, a)
            for metric in ("dice", "meandic"):
                mean, lo, hi = paired(on, off, metric)
                print(f"test-time mirroring on − off (covidseg's models), {metric}: {mean:+.4f} "
                      f"(95 % CI {lo:+.4f} … {hi:+.4f}; with {np.mean([s[metric] for s in on]):.4f}"
                      f", without {np.mean([s[metric] for s in off]):.4f})")
    for other in [a for a in ("bare", "thesis") if a in per_slice and "covidseg" in per_slice]:
        for metric in ("dice", "meandic"):
            a = [s[metric] for s in per_slice["covidseg"]]
            b = [s[metric] for s in per_slice[other]]
            mean, lo, hi = paired(per_slice["covidseg"], per_slice[other], metric)
            by_fold = [float(np.mean([s[metric] for s in per_slice["covidseg"]
                                      if s["fold"] == f])
                             - np.mean([s[metric] for s in per_slice[other] if s["fold"] == f]))
                       for f in folds]
            print(f"covidseg − {other}, {metric}: {mean:+.4f} (95 % CI {lo:+.4f} … {hi:+.4f} over "
                  f"{len(a)} slices; per fold {' '.join(f'{d:+.3f}' for d in by_fold)})")
            out[f"covidseg_over_{other}_{metric}"] = float(np.mean(a) / max(np.mean(b), 1e-9))
    for arm in [a for a in SEMI_ARMS if per_slice.get(a)]:
        for base in [b for b in ("covidseg", "continued") if b != arm and per_slice.get(b)]:
            for metric in ("dice", "meandic"):
                mean, lo, hi = paired(per_slice[arm], per_slice[base], metric)
                print(f"{arm} − {base}, {metric}: {mean:+.4f} (95 % CI {lo:+.4f} … {hi:+.4f}; "
                      f"{np.mean([s[metric] for s in per_slice[arm]]):.4f} vs "
                      f"{np.mean([s[metric] for s in per_slice[base]]):.4f})")
            out[f"{arm}_over_{base}_dice"] = float(
                np.mean([s["dice"] for s in per_slice[arm]])
                / max(np.mean([s["dice"] for s in per_slice[base]]), 1e-9))
    ratios(**out)


def combine(paths: list[str]) -> None:
    """Report the ``--out`` files of several runs (folds or arms run apart, e.g. in parallel on
    one GPU) as one: the same folds of one split, every slice scored once per arm."""
    from covidseg.train.calibration import Calibration

    per_slice, rows, calibration, settings = {}, {}, {}, {}
    uncalibrated = set()
    shared = ("data", "size", "covidseg_size", "steps", "k", "split_seed", "seed", "batch_size",
              "encoder")
    for path in paths:
        run = json.loads(Path(path).read_text())
        s = run["settings"]
        arms = {item["arm"] for item in run["slices"]}
        settings.setdefault("the split and training", set()).add(tuple(s[k] for k in shared))
        if "covidseg" in arms:  # the --set overrides make it another arm (a)
            settings.setdefault("--set", set()).add(json.dumps(s.get("set", []), sort_keys=True))
        if "bare" in arms:
            settings.setdefault("--bare_lr", set()).add(s["bare_lr"])
        if arms & set(SEMI_ARMS):
            settings.setdefault("the semi arms' settings", set()).add(json.dumps(
                [s.get("semi_steps"), s.get("continued_factor"), s.get("semi_set", [])]))
        for row in run["folds"]:
            rows.setdefault(row["fold"], {}).update(row)
        for item in run["slices"]:
            per_slice.setdefault(item["arm"], []).append(item)
        states = run.get("calibration", {})
        uncalibrated |= {a for a in arms if a in ("covidseg", "thesis", "bare")
                         and a not in states}
        for arm, state in states.items():
            cal = Calibration.from_dict(state)
            if arm in calibration:
                calibration[arm].merge(cal)
            else:
                calibration[arm] = cal
    for what, values in settings.items():
        if len(values) > 1:
            if what == "the split and training":
                what = ", ".join(k for i, k in enumerate(shared) if len({v[i] for v in values}) > 1)
            raise SystemExit(f"--combine: the runs differ in {what}: {sorted(map(str, values))}")
    for arm, items in per_slice.items():
        seen = [(s["fold"], s["case_id"]) for s in items]
        if len(seen) != len(set(seen)):
            raise SystemExit(f"--combine: arm {arm} scores a slice twice (a fold run twice?)")
        folds = sorted({f for f, _ in seen})
        if folds != sorted(rows):
            raise SystemExit(f"--combine: arm {arm} ran folds {folds}, the runs together "
                             f"{sorted(rows)}: give every arm the same folds")
        items.sort(key=lambda s: (s["fold"], s["case_id"]))
    for arm in uncalibrated:  # a run written before --out kept it: not every fold's pixels
        calibration.pop(arm, None)
        print(f"(no calibration for {arm}: a run of it has none)")
    data, size, _, steps, k, split_seed, seed, *_ = next(iter(settings["the split and training"]))
    print(f"combined {len(paths)} runs: data={data} size={size} steps={steps} k={k} "
          f"split_seed={split_seed} seed={seed}, folds {','.join(map(str, sorted(rows)))}")
    report(per_slice, [rows[f] for f in sorted(rows)], calibration)


def main() -> None:
    from covidseg.base.device import resolve_device
    from covidseg.data.layouts import read_manifest
    from covidseg.data.splits import fold_split
    from covidseg.data.store import PreprocessedDataset
    from covidseg.train.calibration import Calibration
    from covidseg.train.plan import ITERATIONS_PER_EPOCH, total_iterations
    from covidseg.train.tasks import default_workers

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="folder with labelled/images, labelled/masks")
    ap.add_argument("--size", type=int, default=96, help="the longer side slices are resized to "
                                                         "(multiple of 32)")
    ap.add_argument("--covidseg_size", type=int, default=0,
                    help="arm (a)'s preprocessing side when it differs from --size (with --set "
                         "image_size=CROP: patch training at a higher resolution for the same "
                         "pixels per step)")
    ap.add_argument("--steps", type=int, default=250, help="optimiser steps of every arm (0: the "
                                                           "plan's for these slices)")
    ap.add_argument("--k", type=int, default=5, help="folds")
    ap.add_argument("--folds", default="", help="the folds to run (default all: 0,…,k-1)")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--split_seed", type=int, default=0, help="seed of the fold split")
    ap.add_argument("--seed", type=int, default=0, help="training seed of every arm")
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--encoder", default="resnet34")
    ap.add_argument("--bare_lr", type=float, default=1e-3)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a covidseg finetune parameter for arm (a), e.g. --set lr=3e-3")
    ap.add_argument("--semi_steps", type=int, default=0,
                    help="steps of the meanteacher/unimatch arms (0: the plan's, with the "
                         "unlabelled slices)")
    ap.add_argument("--continued_factor", type=float, default=2.0,
                    help="the continued arm's steps per semi step (2: the mean teacher's student "
                         "images)")
    ap.add_argument("--semi_set", action="append", default=[], metavar="KEY=VALUE",
                    help="a meanteacher parameter for the semi arms, e.g. --semi_set lr=2e-4")
    ap.add_argument("--workers", type=int, default=-1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default="", help="write every slice's scores here (JSON)")
    ap.add_argument("--combine", nargs="+", metavar="OUT", help="report the --out files of "
                    "runs made apart (other folds or arms of the same split) as one; trains "
                    "nothing")
    args = ap.parse_args()
    if args.combine:
        return combine(args.combine)
    if args.size % 32 or args.covidseg_size % 32:
        ap.error("--size and --covidseg_size must be multiples of 32")
    arms = [a for a in args.arms.split(",") if a]
    if set(arms) - set(ARMS) - set(SEMI_ARMS):
        ap.error(f"--arms: choose from {', '.join(ARMS + SEMI_ARMS)}")
    semi = [a for a in SEMI_ARMS if a in arms]
    if semi and "covidseg" not in arms:
        ap.error("--arms: the semi-supervised arms start from arm covidseg's models: add it")
    arms = [a for a in arms if a not in semi] + semi  # (a) first, then what starts from it
    if not args.data:
        ap.error("--data is required (unless --combine)")
    overrides = parse_sets(args.set)
    semi_overrides = parse_sets(args.semi_set, "meanteacher")
    device = resolve_device(args.device)
    args.workers = default_workers(args.workers)
    folder = Path(args.data).expanduser()

    t0 = time.perf_counter()
    dataset = preprocess(folder, args, args.size)
    ds = PreprocessedDataset(Path(dataset))
    own_size = args.covidseg_size or args.size
    own_dataset = (preprocess(folder, args, own_size, unlabelled=bool(semi))
                   if own_size != args.size or semi else dataset)
    own_ds = PreprocessedDataset(Path(own_dataset))
    assert own_ds.splits.folds == ds.splits.folds
    records = {r.case_id: r for r in read_manifest(ds.root / "manifest.csv")}
    folds = [int(f) for f in args.folds.split(",")] if args.folds else list(range(args.k))
    n_train = len(fold_split(ds.splits, folds[0])[0])
    steps = args.steps or total_iterations(n_train, args.batch_size)
    per_epoch = int(overrides.get("iterations_per_epoch", min(ITERATIONS_PER_EPOCH, steps)))
    steps = epochs_for(steps, per_epoch) * per_epoch  # whole epochs: every arm takes as many
    per_pass = max(1, n_train // args.batch_size)
    thesis_epochs = epochs_for(steps, per_pass)
    n_unlabelled = len(own_ds.splits.unlabelled) if semi else 0
    semi_steps = (args.semi_steps or total_iterations(n_train, args.batch_size, n_unlabelled)
                  if semi else 0)
    header("real CT slices: covidseg's defaults vs the thesis's settings vs a bare smp loop "
           "(same folds, same initial weights, same optimiser steps)", device,
           data=str(folder), size=args.size, covidseg_size=own_size, k=args.k,
           folds=",".join(map(str, folds)),
           split_seed=args.split_seed, seed=args.seed, steps=steps, batch_size=args.batch_size,
           encoder=args.encoder, training_slices_per_fold=n_train, covidseg_set=overrides or "-",
           thesis=f"{thesis_epochs} epochs of {per_pass} steps (at most)",
           bare_lr=args.bare_lr, workers=args.workers,
           **({"unlabelled_slices": n_unlabelled, "semi_steps": semi_steps,
               "continued_steps": round(args.continued_factor * semi_steps),
               "semi_set": semi_overrides or "-"} if semi else {}),
           preprocess_s=round(time.perf_counter() - t0, 1))

    if "epochs" in overrides:
        ap.error("--set epochs: give --steps (every arm takes as many)")
    covidseg_recipe = {**overrides, "epochs": steps // per_epoch,
                       "iterations_per_epoch": per_epoch}
    thesis_recipe = {"recipe": "thesis", "epochs": thesis_epochs}
    per_slice = {a: [] for a in arms}
    calibration = {}  # arm → pixel calibration of its out-of-fold probabilities
    fold_rows = []
    for fold in folds:
        train_ids, val_ids = fold_split(ds.splits, fold)
        row = {"fold": fold, "val_slices": len(val_ids)}
        start = None  # arm (a)'s model folder of this fold, while the semi arms need it
        for arm in arms:
            t = time.perf_counter()
            if arm in SEMI_ARMS:
                arm_steps = (round(args.continued_factor * semi_steps) if arm == "continued"
                             else semi_steps)
                model, threshold, tta, summary, _ = run_semi(arm, own_dataset, fold, start,
                                                             arm_steps, args, semi_overrides)
                model = model.to(device)
                probs = {c: covidseg_probabilities(model, own_ds, c, device, tta)
                         for c in val_ids}
                note = f" (kept: {summary.best_network or ''}, epoch {summary.best_epoch})"
            elif arm == "bare":
                model = train_bare([records[c] for c in train_ids], args.size, steps,
                                   args.batch_size, args.bare_lr, args.seed, args.workers,
                                   device, args.encoder)
                probs = {c: bare_probabilities(model, records[c], args.size, device)
                         for c in val_ids}
                threshold, note = 0.5, ""
            else:
                recipe = covidseg_recipe if arm == "covidseg" else thesis_recipe
                arm_dataset, arm_ds = ((own_dataset, own_ds) if arm == "covidseg"
                                       else (dataset, ds))
                model, threshold, tta, summary, model_dir = run_covidseg(
                    arm_dataset, fold, steps, args, recipe, keep=arm == "covidseg" and bool(semi))
                if arm == "covidseg" and semi:
                    start = model_dir
                model = model.to(device)
                probs = {c: covidseg_probabilities(model, arm_ds, c, device, tta)
                         for c in val_ids}
                note = f" (best epoch {summary.best_epoch})" if arm == "thesis" else ""
                if arm == "covidseg":  # the same model with test-time mirroring flipped
                    mirrored = {c: covidseg_probabilities(model, arm_ds, c, device, not tta)
                                for c in val_ids}
                    per_slice.setdefault(MIRROR_ARM[not tta], []).extend(
                        {"case_id": c, "arm": MIRROR_ARM[not tta], "fold": fold,
                         **scores_at_original_size(mirrored[c],
                                                   read_mask(records[c].infection), threshold)}
                        for c in val_ids)
            scores = [{"case_id": c, "arm": arm, "fold": fold,
                       **scores_at_original_size(probs[c], read_mask(records[c].infection),
                                                 threshold)} for c in val_ids]
            per_slice[arm] += scores
            for c in val_ids:
                calibration.setdefault(arm, Calibration()).add(
                    probs[c], read_mask(records[c].infection))
            row[f"{arm} Dice"] = float(np.mean([s["dice"] for s in scores]))
            row[f"{arm} meanDic"] = float(np.mean([s["meandic"] for s in scores]))
            row[f"{arm} s"] = round(time.perf_counter() - t, 1)
            print(f"fold {fold} {arm}: Dice {row[f'{arm} Dice']:.4f} meanDic "
                  f"{row[f'{arm} meanDic']:.4f}{note} [{row[f'{arm} s']} s]", flush=True)
            del model
        if start is not None:
            import shutil

            shutil.rmtree(start.parent, ignore_errors=True)
        fold_rows.append(row)

    if args.out:
        Path(args.out).write_text(json.dumps(
            {"settings": {**vars(args), "steps": steps, "semi_steps": semi_steps},
             "folds": fold_rows,
             "slices": sum(per_slice.values(), []),
             "calibration": {arm: cal.to_dict() for arm, cal in calibration.items()}}, indent=1))
    report(per_slice, fold_rows, calibration)


if __name__ == "__main__":
    main()
