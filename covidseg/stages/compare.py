"""``compare``: SVCCA between networks pulled back from MLflow runs (thesis 5.2.4).

* ``mode=checkpoints`` — one run's intermediate checkpoints (``checkpoint_every``) each against the
  run's final model, layer by layer (thesis figs. 5.2-5.4: which layers settle first);
* ``mode=init-vs-final`` — a fine-tune run's pretrained initialisation (its ``covidseg.source.init``
  run) against the fine-tuned model (fig. 5.5: which layers moved most);
* ``mode=run-vs-run`` — two runs' final models.

Activations come from ``probe_slices`` fixed slices of the dataset's held-out test volumes
(lesion slices first, seeded).  Logs a heat-map or bar chart, a CSV and ``svcca_*`` metrics in its
own run, tagged with the runs it read.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from covidseg.analysis import figures
from covidseg.analysis.activations import collect_activations
from covidseg.analysis.svcca import svcca
from covidseg.base.errors import ConfigError
from covidseg.config import CompareConfig
from covidseg.data.slices import pad_to
from covidseg.models.checkpoint import load_model
from covidseg.stages.datasets import open_dataset
from covidseg.stages.results import CompareResult
from covidseg.tracking import (
    NullTracker,
    Tag,
    download_model,
    download_run_artifacts,
    list_run_artifacts,
    resolve_run_ref,
    run_info,
)

log = logging.getLogger("covidseg.compare")


def probe_set(ds, n: int, seed: int) -> torch.Tensor:
    """``n`` slices of the test volumes (lesion slices first), padded to one size, (n, 1, H, W)."""
    ids = ds.splits.test or ds.ids(labelled=True) or ds.ids()
    rng = np.random.default_rng(seed)
    lesion, other = [], []
    for c in ids:
        image, infection, _ = ds.load(c)
        for z in range(image.shape[0]):
            (lesion if infection is not None and infection[z].any() else other).append((c, z))
    order = ([lesion[i] for i in rng.permutation(len(lesion))]
             + [other[i] for i in rng.permutation(len(other))])
    picked = order[:n]
    if not picked:
        raise ConfigError("the dataset has no slices for a probe set")
    sizes = [ds.meta(c).shape[1:] for c, _ in picked]
    side = int(np.ceil(max(max(s) for s in sizes) / 32) * 32)
    return torch.from_numpy(np.stack([pad_to(np.asarray(ds.load(c)[0][z], np.float32), (side, side))
                                      for c, z in picked]))[:, None]


def layer_similarity(acts_a: dict, acts_b: dict, keep: float) -> dict[str, float]:
    """SVCCA per layer present in both with the same number of data points."""
    return {k: svcca(acts_a[k], acts_b[k], keep) for k in acts_a
            if k in acts_b and len(acts_a[k]) == len(acts_b[k])}


def _run_id(ref: str) -> str:
    return resolve_run_ref(ref)[0]


def compare(cfg: CompareConfig, tracker=None) -> CompareResult:
    tracker = tracker or NullTracker()
    refs = [r.strip() for r in cfg.runs.split(",") if r.strip()]
    need = 2 if cfg.mode == "run-vs-run" else 1
    if len(refs) != need:
        raise ConfigError(f"mode={cfg.mode} needs {need} run id(s) in runs=, got {len(refs)}")
    ds = open_dataset(cfg.data, tracker)
    probe = probe_set(ds, cfg.probe_slices, cfg.seed)
    tracker.log_metrics({"probe_slices": len(probe)})

    def acts(model):
        return collect_activations(model, probe, cfg.max_points, cfg.seed)

    rows = []
    if cfg.mode == "checkpoints":
        run_id = _run_id(refs[0])
        tracker.link_source("run", run_id)
        final_dir, _ = download_model(run_id)
        final = acts(load_model(final_dir, single=True)[0])
        steps = sorted(int(p.rsplit("_", 1)[-1]) for p in list_run_artifacts(run_id, "checkpoints")
                       if p.rsplit("/", 1)[-1].startswith("step_"))
        if not steps:
            raise ConfigError(f"run {run_id} logged no intermediate checkpoints "
                              "(train it with checkpoint_every=N)")
        for step in steps:
            path = download_run_artifacts(run_id, f"checkpoints/step_{step:06d}")
            sims = layer_similarity(acts(load_model(path, single=True)[0]), final, cfg.keep)
            rows += [{"iteration": step, "layer": k, "svcca": v} for k, v in sims.items()]
            tracker.log_metrics({"svcca_mean": float(np.nanmean(list(sims.values())))}, step=step)
        tracker.figure("figures/svcca_checkpoints_vs_final.png", figures.checkpoint_heatmap, rows)
    else:
        if cfg.mode == "init-vs-final":
            run_id = _run_id(refs[0])
            init_run = run_info(run_id).data.tags.get(Tag.source("init"))
            if not init_run:
                raise ConfigError(f"run {run_id} has no pretrained initialisation "
                                  "(covidseg.source.init): it was trained from scratch or a file")
            pairs = [("init", init_run), ("final", run_id)]
        else:
            pairs = [("run_a", _run_id(refs[0])), ("run_b", _run_id(refs[1]))]
        models = []
        for role, rid in pairs:
            tracker.link_source(role, rid)
            models.append(load_model(download_model(rid)[0], single=True)[0])
        sims = layer_similarity(acts(models[0]), acts(models[1]), cfg.keep)
        if not sims:
            raise ConfigError("the two networks have no layer in common to compare")
        rows = [{"layer": k, "svcca": v} for k, v in sims.items()]
        tracker.log_metrics({f"svcca_{k.replace('.', '_')}": v for k, v in sims.items()})
        title = ("pretrained initialisation vs fine-tuned" if cfg.mode == "init-vs-final"
                 else f"{pairs[0][1][:8]} vs {pairs[1][1][:8]}")
        tracker.figure(f"figures/svcca_{cfg.mode}.png", figures.layer_bars, rows, title)
    tracker.log_table(rows, f"svcca_{cfg.mode}.csv")
    values = [r["svcca"] for r in rows]
    lowest = min(rows, key=lambda r: r["svcca"]) if rows else None
    return CompareResult(mode=cfg.mode, layers=len({r["layer"] for r in rows}),
                         svcca_mean=round(float(np.nanmean(values)), 4),
                         moved_most=lowest["layer"] if lowest else None, run_id=tracker.run_id)
