"""``grid``: the thesis's Table 5.1 with one command — architectures × init/strategy cells ×
regimes × folds, each a finetune run nested under one parent, aggregated to mean ± std of the
training, validation and test volume Dice per cell (CSV + figure).

A cell ``scratch`` is init scratch (strategy ``all``); any other cell is that strategy from each
of the ``inits``: a restoration or supervised (auxiliary non-COVID volumes) pretrain run per
architecture made first, the ``pretrained`` runs, or a run / Models Genesis file.  A
finetune run that already FINISHED with identical parameters (tag ``covidseg.grid_key``, a hash
of its full configuration) is reused, not retrained.

**Workers on several machines** (``storage`` / ``$COVIDSEG_GRID_STORAGE`` = a database URL): the
cells — pretrain cells, then finetune cells, each finetune of a pretrained init *needing* its
pretrain cell — are the enqueued trials of an Optuna study (:mod:`covidseg.stages.gridstudy`) that
every worker started with the same parameters joins (the grid's name is a hash of them, or
``grid_name``).  Each worker pops a waiting cell atomically, runs it nested under its own parent
run with a heartbeat, and pops the next; a cell whose worker stopped sending heartbeats is taken
over (its orphan run marked FAILED) and a failing cell retried once, then recorded as failed.
A worker that finds nothing free waits for the others, and once every cell is settled each
worker's parent run logs the whole table.  Without storage the same study lives in memory: the
cells run one after another in this process and the first failure stops the grid, as before.
``optuna-dashboard`` on the storage shows the grid's progress (a cell's value: its validation
volume Dice).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time

import numpy as np

from covidseg.base.errors import CellsFailed, ConfigError, first_line
from covidseg.base.redact import redact
from covidseg.config import FinetuneConfig, GridConfig, PretrainConfig
from covidseg.data.splits import REGIME_ALIASES
from covidseg.models.surgery import STRATEGIES
from covidseg.stages.gridstudy import DONE, FAILED, Cell, GridStudy, worker_name
from covidseg.tracking import Tag, fail_abandoned_run, run_metrics
from covidseg.train.metric_keys import VOLUME_DICE

log = logging.getLogger("covidseg.grid")

PRETRAIN_INITS = ("restoration", "supervised")
# a cell's value in the grid's table and its Optuna trial
VAL_DICE = str(VOLUME_DICE.of("val", "final"))
# parameters that do not change what a cell computes: workers may differ in them and still
# share one grid
NOT_THE_GRID = ("experiment", "storage", "grid_name", "device", "workers")


def _list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def grid_key(cfg: FinetuneConfig) -> str:
    params = {k: v for k, v in cfg.to_params().items() if k not in ("experiment", "resume")}
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:20]


def grid_fingerprint(cfg: GridConfig) -> str:
    """A hash of what the grid computes (its parameters less the per-worker ones)."""
    params = {k: v for k, v in cfg.to_params().items() if k not in NOT_THE_GRID}
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


def grid_settings() -> tuple[float, float]:
    """(heartbeat interval, grace period) in seconds of shared grid cells; env
    COVIDSEG_GRID_HEARTBEAT_S / COVIDSEG_GRID_GRACE_S (10, 150: longer than the 90 s a worker
    waits out a database outage, so that no live worker's cell is taken over)."""
    try:
        return (float(os.environ.get("COVIDSEG_GRID_HEARTBEAT_S", 10)),
                float(os.environ.get("COVIDSEG_GRID_GRACE_S", 150)))
    except ValueError as exc:
        raise ConfigError(f"COVIDSEG_GRID_HEARTBEAT_S / _GRACE_S: {exc}") from exc


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


def cell_config(cfg: GridConfig, arch: str, cell: str, regime: str, fold: int,
                init: str) -> FinetuneConfig:
    scratch = cell == "scratch"
    return FinetuneConfig(data=cfg.data, seed=cfg.seed, device=cfg.device, arch=arch,
                          checkpoint_every=0, encoder=cfg.encoder,
                          init="scratch" if scratch else init,
                          strategy="all" if scratch else cell, regime=regime, fold=fold,
                          recipe=cfg.recipe, epochs=cfg.epochs,
                          iterations_per_epoch=cfg.iterations_per_epoch, patience=cfg.patience,
                          lr=cfg.lr, batch_size=cfg.batch_size, workers=cfg.workers, overlays=1)


def pretrain_config(cfg: GridConfig, arch: str, mode: str) -> PretrainConfig:
    return PretrainConfig(data=cfg.data, seed=cfg.seed, device=cfg.device, arch=arch, mode=mode,
                          checkpoint_every=0, encoder=cfg.encoder, epochs=cfg.pretrain_epochs,
                          image_size=96, batch_size=cfg.batch_size, workers=cfg.workers)


def plan_cells(cfg: GridConfig) -> list[Cell]:
    """The grid's cells in order — a pretrain cell per architecture and pretraining init, then
    every finetune cell (arch × cell × init × regime × fold) — with the keys every worker derives
    alike from the parameters.  Bad lists → ConfigError."""
    archs, strategies = _list(cfg.archs), _list(cfg.strategies)
    regimes = _list(cfg.regimes)
    try:
        folds = [int(f) for f in _list(cfg.folds)]
    except ValueError as exc:
        raise ConfigError(f"folds={cfg.folds!r} is not a list of integers") from exc
    bad = [c for c in strategies if c != "scratch" and c not in STRATEGIES]
    bad += [r for r in regimes if r not in REGIME_ALIASES]
    if bad or not (archs and strategies and regimes and folds):
        raise ConfigError(f"grid: unknown or empty entries {bad or '(an empty list)'}")
    init_names = _list(cfg.inits) or (["pretrained"] if cfg.pretrained else ["restoration"])
    inits: dict[str, dict[str, str]] = {}  # init → arch → run id / URI / file ("" = a cell's)
    for name in init_names if any(c != "scratch" for c in strategies) else []:
        if name == "pretrained":
            inits[name] = parse_pretrained(cfg.pretrained, archs)
            if not inits[name]:
                raise ConfigError("grid: init 'pretrained' needs pretrained=RUN or arch=RUN,…")
        elif name in PRETRAIN_INITS:
            inits[name] = {arch: "" for arch in archs}
        else:
            inits[name] = {arch: name for arch in archs}
    out: list[Cell] = []
    for name in inits:
        if name in PRETRAIN_INITS:
            out += [Cell(f"pretrain/{name}/{arch}", len(out),
                         info={"kind": "pretrain", "arch": arch, "mode": name,
                               "name": f"pretrain-{name}-{arch}"}) for arch in archs]
    for arch in archs:
        for cell in strategies:
            for init in ["scratch"] if cell == "scratch" else list(inits):
                for regime in regimes:
                    for fold in folds:
                        label = cell if cell == "scratch" else f"{init}-{cell}"
                        needs = f"pretrain/{init}/{arch}" if init in PRETRAIN_INITS else ""
                        out.append(Cell(
                            f"finetune/{arch}/{init}/{cell}/{regime}/fold{fold}", len(out),
                            needs=needs,
                            info={"kind": "finetune", "arch": arch, "init": init, "cell": cell,
                                  "regime": regime, "fold": fold,
                                  "ref": inits.get(init, {}).get(arch, ""),
                                  "name": f"{arch}-{label}-{regime}-fold{fold}"}))
    return out


def grid(cfg: GridConfig, tracker) -> dict:
    from covidseg.stages.datasets import open_dataset
    from covidseg.train.figures import grid_figure

    if not tracker.enabled:
        raise ConfigError("grid nests its cells as MLflow runs: tracking must be on")
    planned = plan_cells(cfg)
    url = cfg.storage or os.environ.get("COVIDSEG_GRID_STORAGE", "")
    fingerprint = grid_fingerprint(cfg)
    name = cfg.grid_name or f"grid-{fingerprint[:16]}"
    open_dataset(cfg.data, tracker)  # fails early on bad data; lineage tag to the preprocess run
    heartbeat, grace = grid_settings()
    claims = GridStudy(url, name, heartbeat_s=heartbeat, grace_s=grace,
                        retries=1 if url else 0)
    try:
        claims.register(fingerprint, planned)
        reopened = claims.reopen_failed() if url else 0
        tracker.set_tags({Tag.GRID: name, Tag.GRID_STORAGE: redact(url) or "(in this process)"})
        if reopened:
            log.warning("grid %s: %d failed cells are tried again", name, reopened)
        worker = f"{worker_name()}/{tracker.run_id}"
        ran, poll = 0, min(max(heartbeat / 2, 0.5), 5.0)
        while True:
            claim = claims.claim(worker)
            if claim is None:
                if claims.settled():
                    break
                time.sleep(poll)  # the other workers' cells: wait, or take over a silent one
                continue
            ran += _run_cell(cfg, claim, claims, tracker, name, shared=bool(url))
        final = claims.rows()
    finally:
        claims.close()
    rows, failed = [], []
    for r in final:
        info = r["info"]
        if info["kind"] != "finetune":
            if r["state"] == FAILED:
                failed.append(f"{r['cell']}: {r['error']}")
            continue
        row = {k: info[k] for k in ("arch", "init", "cell", "regime", "fold")}
        row.update(run_id=r["run_id"], reused=bool(r["reused"]), state=r["state"],
                   worker=r["worker"], error=r["error"] if r["state"] == FAILED else "")
        m = run_metrics(r["run_id"]) if r["state"] == DONE else {}
        row.update({split: m.get(str(VOLUME_DICE.of(split, moment))) for split, moment in
                    (("train", "final"), ("val", "final"), ("test", ""))})
        if r["state"] == FAILED:
            failed.append(f"{r['cell']}: {r['error']}")
        rows.append(row)
    done = [row for row in rows if row["state"] == DONE]
    table = aggregate(done)
    reused = sum(row["reused"] for row in done)
    tracker.log_table(rows, "grid/runs.csv")
    if table:
        tracker.log_table(table, "grid/table.csv")
        tracker.figure("figures/grid_volume_dice.png", grid_figure, table)
    tracker.log_metrics({"cells": len(table), "runs": len(done), "reused": reused,
                         "ran_here": ran, "failed": len(failed)})
    if failed:
        raise CellsFailed(f"grid {name}: {len(failed)} cell(s) failed "
                          f"({'; '.join(failed)[:600]}); the table holds the others "
                          "(grid/runs.csv); start the grid again to retry them")
    best = max(table, key=lambda r: r["val_mean"] if r["val_mean"] is not None else -1)
    return {"cells": len(table), "runs": len(done), "reused": reused, "ran_here": ran,
            "grid": name,
            "best_cell": f"{best['arch']}/{best['init']}/{best['cell']}/{best['regime']}"}


def _run_cell(cfg: GridConfig, claim, claims: GridStudy, tracker, name: str, shared: bool) -> int:
    """Run the claimed cell (reusing a FINISHED finetune with the same grid key); record it done,
    or failed.  Returns 1 when this worker trained it, else 0.  Without shared storage a failure
    stops the grid (it is raised); with it the failure is recorded and the worker goes on."""
    from covidseg.stages.pipeline import run_nested

    info = claim.info
    if claim.stale_run:
        _close_orphan(claim.stale_run, claim.key)
    tags = {Tag.GRID: name, Tag.GRID_CELL: info["name"]}

    def started(run_id: str) -> None:
        claims.started(claim, run_id)

    reused, ran = False, 1
    try:
        with claims.keep_alive(claim) if shared else contextlib.nullcontext():
            if info["kind"] == "pretrain":
                pcfg = pretrain_config(cfg, info["arch"], info["mode"])
                run_id, _ = run_nested(tracker, "pretrain", pcfg, info["name"], tags,
                                       on_start=started)
            else:
                ref = claim.needs_run if info["init"] in PRETRAIN_INITS else info["ref"]
                fcfg = cell_config(cfg, info["arch"], info["cell"], info["regime"], info["fold"],
                                   ref)
                key = grid_key(fcfg)
                found = tracker.find_run({Tag.GRID_KEY: key, Tag.ENTRY_POINT: "finetune"})
                if found:
                    run_id, reused, ran = found, True, 0
                else:
                    run_id, _ = run_nested(tracker, "finetune", fcfg, info["name"],
                                           {**tags, Tag.GRID_KEY: key,
                                            Tag.GRID_INIT: info["init"]},
                                           on_start=started, progress=False)
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            claims.release(claim)  # not the cell's fault: another worker may take it now
        raise
    except Exception as exc:
        error = exc
    else:
        error = None
    if error is not None:  # recorded outside the handler: a database error there is its own
        message = " ".join(str(error).split()) or type(error).__name__
        state = claims.fail(claim, message)
        if not shared:
            raise error
        log.warning("grid %s: cell %s failed (%s); %s", name, claim.key, redact(message)[:300],
                    "it will be tried again" if state == "pending" else "recorded as failed")
        return 0
    if not claims.finish(claim, run_id, reused, _cell_value(run_id, info["kind"])):
        log.warning("grid %s: cell %s was taken over by another worker while this one ran it "
                    "(its heartbeats came too late): run %s is a duplicate", name, claim.key,
                    run_id)
    return ran


def _cell_value(run_id: str, kind: str) -> float:
    """The value of a done cell's trial (what the Optuna dashboard plots): a finetune's final
    validation volume Dice; 0 for a pretrain cell, a run without it, or a server that does not
    answer now (the work is done: the cell must still be finished, not left to go stale)."""
    try:
        value = run_metrics(run_id).get(VAL_DICE) if kind == "finetune" else None
    except Exception as exc:  # MLflow down for a moment: the dashboard shows 0 for this cell
        log.warning("grid: the value of run %s could not be read (%s): its trial shows 0",
                    run_id, first_line(exc, 200))
        value = None
    return float(value) if value is not None and np.isfinite(value) else 0.0


def _close_orphan(run_id: str, cell: str) -> None:
    """The run a dead worker left RUNNING: mark it FAILED, saying why."""
    fail_abandoned_run(run_id, f"grid cell {cell}: its worker stopped sending heartbeats; the "
                               "cell was run again")


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
