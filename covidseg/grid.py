"""``grid``: the thesis's Table 5.1 with one command — architectures × init/strategy cells ×
regimes × folds, each a finetune run nested under one parent, aggregated to mean ± std of the
training, validation and test volume Dice per cell (CSV + figure).

A cell ``scratch`` is init scratch (strategy ``all``); any other cell is that strategy from each
of the ``inits``: a restoration or supervised (auxiliary non-COVID volumes) pretrain run per
architecture made first, the ``pretrained`` runs, or a run / Models Genesis file.  A
finetune run that already FINISHED with identical parameters (tag ``covidseg.grid_key``, a hash
of its full configuration) is reused, not retrained.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from covidseg.config import FinetuneConfig, GridConfig, PretrainConfig
from covidseg.data.splits import REGIME_ALIASES
from covidseg.errors import ConfigError
from covidseg.models.surgery import STRATEGIES


def _list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def grid_key(cfg: FinetuneConfig) -> str:
    params = {k: v for k, v in cfg.to_params().items() if k not in ("experiment", "resume")}
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:20]


def parse_pretrained(text: str, archs: list[str]) -> dict[str, str]:
    if not text:
        return {}
    if "=" not in text:
        return {a: text for a in archs}
    out = dict(item.split("=", 1) for item in _list(text))
    missing = [a for a in archs if a not in out]
    if missing:
        raise ConfigError(f"pretrained= has no entry for {', '.join(missing)}")
    return out


def cell_config(cfg: GridConfig, arch: str, cell: str, regime: str, fold: int, init: str) -> FinetuneConfig:
    return FinetuneConfig(data=cfg.data, seed=cfg.seed, device=cfg.device, arch=arch,
                          checkpoint_every=0, encoder=cfg.encoder, init="scratch" if cell == "scratch" else init,
                          strategy="all" if cell == "scratch" else cell, regime=regime, fold=fold,
                          epochs=cfg.epochs, patience=cfg.patience, lr=cfg.lr,
                          batch_size=cfg.batch_size, workers=cfg.workers, overlays=1)


def grid(cfg: GridConfig, tracker) -> dict:
    from mlflow.tracking import MlflowClient

    from covidseg.data.store import open_dataset
    from covidseg.pipeline import run_nested
    from covidseg.train.figures import grid_figure

    if not tracker.enabled:
        raise ConfigError("grid nests its cells as MLflow runs: tracking must be on")
    archs, cells = _list(cfg.archs), _list(cfg.strategies)
    regimes, folds = _list(cfg.regimes), [int(f) for f in _list(cfg.folds)]
    bad = [c for c in cells if c != "scratch" and c not in STRATEGIES]
    bad += [r for r in regimes if r not in REGIME_ALIASES]
    if bad or not (archs and cells and regimes and folds):
        raise ConfigError(f"grid: unknown or empty entries {bad or '(an empty list)'}")
    open_dataset(cfg.data, tracker)  # fails early on bad data; lineage tag to the preprocess run
    data = cfg.data
    client = MlflowClient()
    init_names = _list(cfg.inits) or (["pretrained"] if cfg.pretrained else ["restoration"])
    inits: dict[str, dict[str, str]] = {}  # init name → arch → run id / URI / file
    for name in init_names if any(c != "scratch" for c in cells) else []:
        if name == "pretrained":
            inits[name] = parse_pretrained(cfg.pretrained, archs)
            if not inits[name]:
                raise ConfigError("grid: init 'pretrained' needs pretrained=RUN or arch=RUN,…")
        elif name in ("restoration", "supervised"):
            inits[name] = {}
            for arch in archs:
                pcfg = PretrainConfig(data=data, seed=cfg.seed, device=cfg.device, arch=arch,
                                      mode=name, checkpoint_every=0, encoder=cfg.encoder,
                                      epochs=cfg.pretrain_epochs, image_size=96,
                                      batch_size=cfg.batch_size, workers=cfg.workers)
                inits[name][arch], _ = run_nested(tracker, "pretrain", pcfg, f"pretrain-{name}-{arch}")
        else:
            inits[name] = {arch: name for arch in archs}
    rows, reused = [], 0
    for arch in archs:
        for cell in cells:
            for init in ["scratch"] if cell == "scratch" else list(inits):
                for regime in regimes:
                    for fold in folds:
                        ref = inits.get(init, {}).get(arch, "")
                        fcfg = cell_config(cfg, arch, cell, regime, fold, ref)
                        key = grid_key(fcfg)
                        found = tracker.find_run({"covidseg.grid_key": key,
                                                  "covidseg.entry_point": "finetune"})
                        if found:
                            run_id, reused = found, reused + 1
                        else:
                            label = cell if cell == "scratch" else f"{init}-{cell}"
                            name = f"{arch}-{label}-{regime}-fold{fold}"
                            run_id, _ = run_nested(tracker, "finetune", fcfg, name,
                                                   {"covidseg.grid_key": key,
                                                    "covidseg.grid_cell": name,
                                                    "covidseg.grid_init": init},
                                                   progress=False)
                        m = client.get_run(run_id).data.metrics
                        rows.append({"arch": arch, "init": init, "cell": cell,
                                     "regime": regime, "fold": fold,
                                     "run_id": run_id, "reused": bool(found),
                                     "train": m.get("final_train_volume_dice"),
                                     "val": m.get("final_val_volume_dice"),
                                     "test": m.get("test_volume_dice")})
    table = aggregate(rows)
    tracker.log_table(rows, "grid/runs.csv")
    tracker.log_table(table, "grid/table.csv")
    tracker.figure("figures/grid_volume_dice.png", grid_figure, table)
    tracker.log_metrics({"cells": len(table), "runs": len(rows), "reused": reused})
    best = max(table, key=lambda r: r["val_mean"] if r["val_mean"] is not None else -1)
    return {"cells": len(table), "runs": len(rows), "reused": reused,
            "best_cell": f"{best['arch']}/{best['init']}/{best['cell']}/{best['regime']}"}


def mean_std_by(rows: list[dict], by: tuple[str, ...], values: dict[str, str],
                count: str = "n") -> list[dict]:
    """One row per group of ``rows`` sharing the ``by`` columns (in order of first appearance):
    the group's size as ``count`` and, for each ``name: column`` of ``values``, ``name_mean`` and
    ``name_std`` over the group's non-missing values (None when there are none)."""
    out = []
    for key in dict.fromkeys(tuple(r[k] for k in by) for r in rows):
        group = [r for r in rows if tuple(r[k] for k in by) == key]
        row = {**dict(zip(by, key)), count: len(group)}
        for name, column in values.items():
            v = np.array([g[column] for g in group if g[column] is not None], dtype=float)
            row[f"{name}_mean"] = float(v.mean()) if v.size else None
            row[f"{name}_std"] = float(v.std()) if v.size else None
        out.append(row)
    return out


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean ± std over folds of train / val / test volume Dice per (arch, init, cell, regime)."""
    return mean_std_by(rows, ("arch", "init", "cell", "regime"),
                       {"train": "train", "val": "val", "test": "test"}, count="folds")
