"""How much do pretraining and the unlabelled volumes help, per labelled-volume budget?

A label-budget sweep on a phantom cohort with a fixed held-out test set: for each seed and each
budget (labelled training volumes, drawn per seed from the fold's training volumes), three
methods, all through covidseg's own entry-point functions:

* ``scratch``     — finetune from random initialisation;
* ``finetune``    — finetune from a restoration-pretrained network (one ``pretrain`` per seed on
  every non-test volume, labels unused);
* ``meanteacher`` — that fine-tuned network + ``pseudolabel`` (its defaults: self-training,
  ``source=model``) + ``meanteacher`` on the same labelled budget plus the unlabelled volumes;
* ``meanteacher-similarity`` — the same with the thesis's patch-similarity pseudo-labels
  (``source=similarity``, its defaults: centred GAP features, quantile band, tissue sampling);
* ``meanteacher-consistency`` — the mean teacher alone (Tarvainen & Valpola): no pseudo-labels,
  only the consistency between student and teacher on the unlabelled slices;
* ``unimatch`` — the online method (UniMatch: the EMA teacher's confident pixels as targets for
  two CutMix-ed strong views and a feature-perturbed weak view; no pseudolabel run);
* ``oracle`` — the upper bound: the mean teacher with the unlabelled phantoms' *true* masks as
  its pseudo-labels (``pseudolabel -P source=oracle``), so the headroom is visible;
* ``continued`` — the control for the mean-teacher's extra steps: the fine-tuned network trained
  as many more steps by the mean-teacher task with no pseudo-labels and no consistency (only the
  labelled slices and the EMA teacher), so a gain can be told from "trained longer".

Scores are the test set's volume-level Dice and NSD (3 mm).  Everything is one MLflow parent run
(experiment ``benchmarks``) with every stage nested under it; the parent holds the table
(``label_efficiency/runs.csv``, ``label_efficiency/table.csv``), the plot of Dice against the
budget (``figures/label_efficiency_dice.png``, also saved under ``--out``) and per-cell metrics.

    python benchmarks/label_efficiency.py                     # small: finishes on a laptop CPU
    python benchmarks/label_efficiency.py --size large        # the same sweep at GPU scale
    python benchmarks/label_efficiency.py --budgets 2,5,10 --seeds 0,1,2 --iterations 1000

Uses ``MLFLOW_TRACKING_URI`` when set, else a throw-away local ``mlflow server``.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
from bench import header, ratios, table, tracking_server

from covidseg.config import CommonConfig, param, parse_value

METHODS = ("scratch", "finetune", "meanteacher", "meanteacher-similarity",
           "meanteacher-consistency", "unimatch", "oracle", "continued")
# method → (pseudo-label source or None, consistency weight, meanteacher's method)
SEMI = {"meanteacher": ("model", 1.0, "meanteacher"),
        "meanteacher-similarity": ("similarity", 1.0, "meanteacher"),
        "meanteacher-consistency": (None, 1.0, "meanteacher"),
        "unimatch": (None, 1.0, "unimatch"),
        "oracle": ("oracle", 1.0, "meanteacher"),
        "continued": (None, 0.0, "meanteacher")}


@dataclass
class SweepConfig(CommonConfig):
    """The sweep's parameters (logged as the parent run's parameters)."""

    size: str = param("small", "preset", ("small", "large"))
    budgets: str = param("2,5,10", "labelled training volumes per run")
    seeds: str = param("0,1", "seeds (subset of volumes, initialisation, sampling)")
    methods: str = param("scratch,finetune,meanteacher", "methods to compare, from "
                                                         + ",".join(METHODS))
    labelled: int = param(20, "labelled phantoms (test + validation + training pool)")
    unlabelled: int = param(20, "unlabelled phantoms (pretraining and mean-teacher)")
    test_cases: int = param(8, "held-out test volumes")
    folds: int = param(6, "folds: fold 0 validates, the rest is the training pool")
    phantom_size: int = param(96, "phantom side in pixels")
    phantom_depth: int = param(32, "phantom length in mm")
    encoder: str = param("resnet18", "encoder of the U-Net")
    iterations: int = param(400, "optimiser steps of every finetune run, whatever its budget "
                                 "(epochs = iterations / steps per epoch): equal compute per run")
    meanteacher_iterations: int = param(300, "optimiser steps of every mean-teacher run")
    pretrain_epochs: int = param(4, "restoration pretraining epochs")
    lr: float = param(1e-3, "finetune learning rate")
    batch_size: int = param(8, "slices per batch")
    workers: int = param(-1, "DataLoader workers")
    out: str = param("", "folder for the plot (default: benchmarks/results)")


LARGE = {"labelled": 44, "unlabelled": 60, "test_cases": 20, "folds": 12, "phantom_size": 128,
         "phantom_depth": 48, "encoder": "resnet34", "iterations": 4000,
         "meanteacher_iterations": 3000, "pretrain_epochs": 30, "seeds": "0,1,2"}


def parse_args() -> SweepConfig:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for f in fields(SweepConfig):
        ap.add_argument(f"--{f.name}", default=None, help=f.metadata.get("help"))
    ns = vars(ap.parse_args())
    preset = LARGE if ns.get("size") == "large" else {}
    cfg = SweepConfig(experiment="benchmarks")
    values = {}
    for f in fields(SweepConfig):
        raw = ns[f.name] if ns[f.name] is not None else preset.get(f.name)
        if raw is not None:
            values[f.name] = parse_value(f, str(raw))
    cfg = replace(cfg, **values)
    cfg.validate()
    return cfg


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def schedule_for(iterations: int) -> dict:
    """``epochs`` × ``iterations_per_epoch`` = ``iterations`` (rounded up to whole epochs of at
    most the plan's 50 steps): the same number of optimiser steps for every budget."""
    from covidseg.train.plan import ITERATIONS_PER_EPOCH

    per_epoch = max(1, min(ITERATIONS_PER_EPOCH, iterations))
    return {"epochs": max(1, math.ceil(iterations / per_epoch)), "iterations_per_epoch": per_epoch}


def sweep(cfg: SweepConfig, tracker) -> list[dict]:
    from mlflow.tracking import MlflowClient

    from covidseg.config import (
        FinetuneConfig,
        MeanteacherConfig,
        PreprocessConfig,
        PretrainConfig,
        PseudolabelConfig,
    )
    from covidseg.stages.pipeline import run_nested

    client = MlflowClient()
    methods = [m.strip() for m in cfg.methods.split(",") if m.strip()]
    common = {"seed": 0, "device": cfg.device}
    pre_cfg = PreprocessConfig(data="demo", demo_labelled=cfg.labelled,
                               demo_unlabelled=cfg.unlabelled, demo_noncovid=0,
                               demo_size=cfg.phantom_size, demo_depth=cfg.phantom_depth,
                               test_cases=cfg.test_cases, folds=cfg.folds, **common)
    data, _ = run_nested(tracker, "preprocess", pre_cfg, "preprocess", progress=False)
    train = {"data": data, "batch_size": cfg.batch_size,
             "workers": cfg.workers, "device": cfg.device, "overlays": 1, "checkpoint_every": 0}
    rows = []
    for seed in _ints(cfg.seeds):
        pretrained = None
        if set(methods) - {"scratch"}:
            pcfg = PretrainConfig(data=data, seed=seed, device=cfg.device, encoder=cfg.encoder,
                                  epochs=cfg.pretrain_epochs, batch_size=cfg.batch_size,
                                  workers=cfg.workers, image_size=96, checkpoint_every=0)
            pretrained, _ = run_nested(tracker, "pretrain", pcfg, f"pretrain-seed{seed}",
                                       {"covidseg.sweep_seed": str(seed)}, progress=False)
        for budget in _ints(cfg.budgets):
            tags = {"covidseg.sweep_seed": str(seed), "covidseg.sweep_budget": str(budget)}
            base = FinetuneConfig(**train, encoder=cfg.encoder, seed=seed, train_cases=budget,
                                  patience=0, lr=cfg.lr,
                                  lesion_boost=3.0)
            base = replace(base, **schedule_for(cfg.iterations))
            runs, pl_result = {}, {}
            if "scratch" in methods:
                runs["scratch"], _ = run_nested(tracker, "finetune", base,
                                                f"scratch-b{budget}-s{seed}",
                                                {**tags, "covidseg.sweep_method": "scratch"},
                                                progress=False)
            if pretrained:
                ft = replace(base, init=pretrained)
                runs["finetune"], _ = run_nested(tracker, "finetune", ft,
                                                 f"finetune-b{budget}-s{seed}",
                                                 {**tags, "covidseg.sweep_method": "finetune"},
                                                 progress=False)
            mt_schedule = schedule_for(cfg.meanteacher_iterations)
            mt_epochs = mt_schedule["epochs"]
            for method in [m for m in methods if m in SEMI]:
                (source, consistency, semi_method), pseudo = SEMI[method], ""
                if source:
                    pl_cfg = PseudolabelConfig(data=data, seed=seed, device=cfg.device,
                                               model=runs["finetune"], source=source)
                    pseudo, pl_result[method] = run_nested(
                        tracker, "pseudolabel", pl_cfg, f"pseudolabel-{source}-b{budget}-s{seed}",
                        tags)
                mt = MeanteacherConfig(**train, seed=seed, train_cases=budget,
                                       model=runs["finetune"],
                                       pseudo=pseudo, **mt_schedule, patience=0, lr=2e-4,
                                       lesion_boost=3.0, rampup_epochs=max(1, mt_epochs // 3),
                                       consistency_weight=consistency, method=semi_method)
                runs[method], _ = run_nested(tracker, "meanteacher", mt,
                                             f"{method}-b{budget}-s{seed}",
                                             {**tags, "covidseg.sweep_method": method},
                                             progress=False)
            for method in methods:
                m = client.get_run(runs[method]).data.metrics
                rows.append({"method": method, "budget": budget, "seed": seed,
                             "run_id": runs[method], "test_dice": m.get("test_volume_dice"),
                             "test_nsd": m.get("test_volume_nsd"),
                             "val_dice": m.get("final_val_volume_dice"),
                             "pseudo_acceptance": getattr(pl_result.get(method),
                                                          "acceptance_rate", None),
                             "pseudo_oracle_dice": getattr(pl_result.get(method),
                                                           "oracle_dice_pooled", None)})
                print(f"  seed {seed} budget {budget:>2} {method:<11} test Dice "
                      f"{rows[-1]['test_dice']:.3f} NSD {rows[-1]['test_nsd']:.3f}", flush=True)
    return rows


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean ± std over seeds of test Dice and NSD per (method, budget), method-major."""
    from covidseg.stages.grid import mean_std_by

    methods = list(dict.fromkeys(r["method"] for r in rows))
    out = mean_std_by(rows, ("method", "budget"), {"dice": "test_dice", "nsd": "test_nsd"},
                      count="seeds")
    return sorted(out, key=lambda r: (methods.index(r["method"]), r["budget"]))


def plot(summary: list[dict], title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for method in dict.fromkeys(r["method"] for r in summary):
        rs = [r for r in summary if r["method"] == method]
        x = [r["budget"] for r in rs]
        mean = np.array([r["dice_mean"] for r in rs])
        std = np.array([r["dice_std"] for r in rs])
        ax.plot(x, mean, marker="o", label=method)
        ax.fill_between(x, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("labelled training volumes")
    ax.set_ylabel("test volume Dice (mean ± std over seeds)")
    ax.set_xticks(sorted({r["budget"] for r in summary}))
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def main() -> None:
    from covidseg.base.device import resolve_device
    from covidseg.tracking import quiet_mlflow_warnings, start_run

    cfg = parse_args()
    ap_out = Path(cfg.out) if cfg.out else Path(__file__).resolve().parent / "results"
    device = resolve_device(cfg.device)
    header("label efficiency: scratch vs finetune (restoration) vs finetune + meanteacher",
           device, size=cfg.size, budgets=cfg.budgets, seeds=cfg.seeds,
           cohort=f"{cfg.labelled} labelled ({cfg.test_cases} test) + {cfg.unlabelled} unlabelled, "
                  f"{cfg.phantom_size} px", encoder=cfg.encoder, iterations=cfg.iterations,
           meanteacher_iterations=cfg.meanteacher_iterations)
    quiet_mlflow_warnings()
    t0 = time.time()
    with tracking_server() as uri, start_run("label-efficiency", cfg.to_params(),
                                                  cfg.experiment) as tracker:
        print(f"tracking: {uri}  parent run: {tracker.run_id}", flush=True)
        rows = sweep(cfg, tracker)
        summary = aggregate(rows)
        tracker.log_table(rows, "label_efficiency/runs.csv")
        tracker.log_table(summary, "label_efficiency/table.csv")
        for r in summary:
            tracker.log_metrics({f"{r['method']}_b{r['budget']}_dice_mean": r["dice_mean"],
                                 f"{r['method']}_b{r['budget']}_dice_std": r["dice_std"],
                                 f"{r['method']}_b{r['budget']}_nsd_mean": r["nsd_mean"]})
        fig = plot(summary, f"phantom cohort, {cfg.size} ({cfg.encoder}), seeds {cfg.seeds}")
        ap_out.mkdir(parents=True, exist_ok=True)
        fig.savefig(ap_out / "label_efficiency_dice.png", dpi=120)
        tracker.log_figure(fig, "figures/label_efficiency_dice.png")
        minutes = (time.time() - t0) / 60
        tracker.log_metrics({"minutes": minutes})
    table([{"method": r["method"], "budget": r["budget"], "seeds": r["seeds"],
            "test Dice": f"{r['dice_mean']:.3f} ± {r['dice_std']:.3f}",
            "test NSD": f"{r['nsd_mean']:.3f} ± {r['nsd_std']:.3f}"} for r in summary])
    print(f"plot: {ap_out / 'label_efficiency_dice.png'}  ({minutes:.1f} min)")
    by = {(r["method"], r["budget"]): r["dice_mean"] for r in summary}
    budgets = sorted({r["budget"] for r in summary})
    out = {}
    for b in budgets:
        if ("finetune", b) in by and ("scratch", b) in by:
            out[f"finetune_minus_scratch_b{b}"] = by[("finetune", b)] - by[("scratch", b)]
        for method in SEMI:
            if (method, b) in by and ("finetune", b) in by:
                key = method.replace("-", "_")  # RATIOS names are identifiers
                out[f"{key}_minus_finetune_b{b}"] = by[(method, b)] - by[("finetune", b)]
    ratios(**out)


if __name__ == "__main__":
    main()
