"""``tune``: an Optuna study around the training functions (finetune or meanteacher).

* The search space is declared once, on the config dataclasses (``param(..., search=(low, high
  [, "log"]))``): the learning rate (``search=`` adds weight decay, the StepLR step and gamma,
  the threshold); for meanteacher also the EMA α, the
  consistency weight and — when no fixed ``pseudo`` run is given — the pseudo-label threshold that
  acts under pseudolabel's defaults (``confidence`` for self-training; it would be
  ``accept_fraction`` or the absolute band for the similarity method) — each trial then runs
  pseudolabel first.
* Objective: the validation volume Dice of the trial's kept model (its last epoch under
  ``keep=last``, the default; its best under ``keep=best``).  A median pruner reads the per-epoch
  ``val_volume_dice`` reported by the training loop's ``on_epoch_end`` hook.
* MLflow: this invocation's run is the parent; every trial is a nested run (tag
  ``mlflow.parentRunId`` set explicitly — optuna-integration's MLflowCallback is deprecated and
  mis-nests), finished, pruned (KILLED, tag ``covidseg.trial_state=pruned``) or failed.  The parent
  logs the best parameters, the optimisation history and the parameter importances.
* Storage: an SQLite file by default, any RDB URL (``postgresql://…``) to share a study between
  workers and machines; the same ``study_name`` resumes the study.  Workers send heartbeats: a
  worker that dies leaves its trial RUNNING only until the grace period, then it is marked FAIL
  and retried once, so the study stays usable.
"""

from __future__ import annotations

import logging
import os
from dataclasses import fields

from covidseg.base.errors import ConfigError
from covidseg.base.paths import cache_root
from covidseg.config import (
    CONFIGS,
    PseudolabelConfig,
    TuneConfig,
    parse_value,
)
from covidseg.train.loop import AbortTraining
from covidseg.train.metric_keys import VAL_VOLUME_DICE, Moment

BEST_VAL_DICE = str(VAL_VOLUME_DICE.at(Moment.BEST))  # the objective, as finetune and tune log it

log = logging.getLogger("covidseg.tune")

def heartbeat_settings() -> tuple[int, int]:
    """(heartbeat interval, grace period) in seconds; env COVIDSEG_TUNE_HEARTBEAT_S / _GRACE_S."""
    return (int(os.environ.get("COVIDSEG_TUNE_HEARTBEAT_S", 10)),
            int(os.environ.get("COVIDSEG_TUNE_GRACE_S", 60)))


class TrialPruned(AbortTraining):
    """The pruner stopped a trial: not a failure, nothing to keep for resuming."""

    run_status = "KILLED"


def default_storage() -> str:
    path = cache_root() / "optuna"
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / 'studies.db'}"


def open_study(cfg: TuneConfig):
    """The study ``cfg.study_name`` on the shared storage (:mod:`covidseg.stages.studystore`:
    SQLite transactions ``BEGIN IMMEDIATE``, so workers popping retried trials take each once),
    with the median pruner; returns (study, url)."""
    import optuna

    from covidseg.stages import studystore

    url = cfg.storage or os.environ.get("COVIDSEG_OPTUNA_STORAGE") or default_storage()
    heartbeat, grace = heartbeat_settings()
    storage = studystore.open_storage(url, heartbeat, grace, retries=1)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=cfg.warmup_epochs)
    return studystore.open_study(storage, cfg.study_name, pruner), url


def parse_fixed(text: str, cls) -> dict:
    """``k=v,k=v`` → typed values for the fields of ``cls``."""
    known = {f.name: f for f in fields(cls)}
    out = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        if "=" not in item:
            raise ConfigError(f"params: {item!r} is not key=value")
        k, v = (x.strip() for x in item.split("=", 1))
        if k not in known:
            raise ConfigError(f"params: {k!r} is not a {cls.__name__} parameter")
        out[k] = parse_value(known[k], v)
    return out


def acting_thresholds(pl: PseudolabelConfig) -> set[str]:
    """The pseudolabel thresholds that change anything under ``pl``'s method and band."""
    if pl.source == "model":
        return {"confidence"}
    if pl.band == "quantile":
        return {"accept_fraction"}
    return {"sim_low", "sim_high"} if pl.rule == "top1-band" else {"sim_min"}


def search_space(cfg: TuneConfig, fixed: dict) -> dict:
    """{name: (kind, low, high, log)} of the parameters this study searches."""
    classes = [(CONFIGS[cfg.target], None)]
    if cfg.target == "meanteacher" and "pseudo" not in fixed:
        classes.append((PseudolabelConfig, acting_thresholds(PseudolabelConfig())))
    space = {}
    for cls, only in classes:
        for f in fields(cls):
            rng = f.metadata.get("search")
            named = bool(cfg.search) and f.name in cfg.search.replace(" ", "").split(",")
            if rng and f.name not in fixed and (only is None or f.name in only) and \
                    (named or f.metadata.get("searched_by_default", True)):
                kind = f.type if isinstance(f.type, str) else f.type.__name__
                kind = "float" if kind == "str" else kind  # e.g. threshold: a probability
                space[f.name] = (kind, rng[0], rng[1], len(rng) > 2 and rng[2] == "log")
    if cfg.search:
        wanted = [x.strip() for x in cfg.search.split(",") if x.strip()]
        unknown = [w for w in wanted if w not in space]
        if unknown:
            raise ConfigError(f"search: {', '.join(unknown)} not searchable for "
                              f"target={cfg.target} (searchable: {', '.join(space)})")
        space = {k: space[k] for k in wanted}
    if not space:
        raise ConfigError("nothing to search: every searchable parameter is fixed")
    return space


def suggest(trial, space: dict) -> dict:
    out = {}
    for name, (kind, low, high, log_scale) in space.items():
        if kind == "int":
            out[name] = trial.suggest_int(name, int(low), int(high), log=log_scale)
        else:
            out[name] = trial.suggest_float(name, float(low), float(high), log=log_scale)
    return out


def tune(cfg: TuneConfig, tracker) -> dict:
    import optuna

    from covidseg.tracking import Tag, child_run

    if not tracker.enabled:
        raise ConfigError("tune logs every trial as a nested MLflow run: tracking must be on")
    target_cls = CONFIGS[cfg.target]
    # trials are compared by their validation score: no SVCCA checkpoints unless asked for
    fixed = {"checkpoint_every": 0, **parse_fixed(cfg.params, target_cls)}
    if cfg.target == "meanteacher" and not fixed.get("model"):
        raise ConfigError("target=meanteacher needs params=model=<finetune run>[,pseudo=<run>]")
    if fixed.get("cv"):
        raise ConfigError("tune scores each trial on one validation fold: params=cv=… is not "
                          "for trials (cross-validate the chosen parameters afterwards)")
    space = search_space(cfg, fixed)
    study, url = open_study(cfg)
    tracker.set_tags({Tag.STUDY: cfg.study_name,
                      Tag.STORAGE: url.split("@")[-1]})  # no credentials
    tracker.log_dict({"fixed": {k: str(v) for k, v in fixed.items()}, "space": space},
                     "study/space.json")
    common = {"data": cfg.data, "seed": cfg.seed, "device": cfg.device}

    def trial_tags(number: int) -> dict:
        return {Tag.TRIAL: str(number), Tag.STUDY: cfg.study_name}

    def objective(trial):
        values = suggest(trial, space)
        trial_fields = {f.name for f in fields(target_cls)}
        train_values = {k: v for k, v in values.items() if k in trial_fields}
        run_cfg = target_cls(**{**common, **fixed, **train_values, "experiment": ""})
        run_cfg.validate()
        if cfg.target == "meanteacher" and "pseudo" not in fixed:
            from covidseg.stages.pseudolabel import pseudolabel

            pl_values = {k: v for k, v in values.items() if k not in trial_fields}
            pl_cfg = PseudolabelConfig(**common, model=fixed["model"], **pl_values)
            with child_run(tracker, f"trial-{trial.number}-pseudolabel", "pseudolabel",
                           pl_cfg.to_params(), trial_tags(trial.number)) as pl_tracker:
                pseudolabel(pl_cfg, pl_tracker)
            run_cfg.pseudo = pl_tracker.run_id

        def report(epoch: int, metrics: dict) -> None:
            trial.report(float(metrics[str(VAL_VOLUME_DICE)]), epoch)
            if trial.should_prune():
                raise TrialPruned(f"pruned by the median rule at epoch {epoch}")

        train = _trainer(cfg.target)
        try:
            with child_run(tracker, f"trial-{trial.number}", cfg.target, run_cfg.to_params(),
                           trial_tags(trial.number)) as child:
                trial.set_user_attr("mlflow_run_id", child.run_id)
                result = train(run_cfg, child, on_epoch_end=[report], progress=False)
                child.set_tags({Tag.TRIAL_STATE: "complete"})
        except TrialPruned as exc:
            child.set_tags({Tag.TRIAL_STATE: "pruned", Tag.STOP_REASON: str(exc)})
            raise optuna.TrialPruned(str(exc)) from exc
        return float(result.best_val_volume_dice)

    before = len(study.trials)
    study.optimize(objective, n_trials=cfg.n_trials, timeout=cfg.timeout or None,
                   catch=(ConfigError,), gc_after_trial=True)
    return _log_study(study, tracker, before)


def _trainer(target: str):
    if target == "finetune":
        from covidseg.stages.finetune import finetune

        return finetune
    from covidseg.stages.meanteacher import meanteacher

    return meanteacher


def _log_study(study, tracker, before: int) -> dict:
    import optuna
    from optuna.trial import TrialState

    from covidseg.tracking import Tag

    states = [t.state for t in study.trials]
    counts = {s.name.lower(): states.count(s) for s in (TrialState.COMPLETE, TrialState.PRUNED,
                                                         TrialState.FAIL, TrialState.RUNNING)}
    tracker.log_metrics({f"trials_{k}": v for k, v in counts.items()} |
                        {"trials_this_worker": len(study.trials) - before})
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if not complete:
        return {"study": study.study_name, **counts}
    best = study.best_trial
    tracker.log_metrics({BEST_VAL_DICE: best.value, "best_trial": best.number})
    tracker.log_params({f"best_{k}": v for k, v in best.params.items()})
    tracker.set_tags({Tag.BEST_TRIAL_RUN: best.user_attrs.get("mlflow_run_id", "")})
    tracker.log_table([{"number": t.number, "state": t.state.name, "value": t.value, **t.params,
                        "mlflow_run_id": t.user_attrs.get("mlflow_run_id", "")}
                       for t in study.trials], "study/trials.csv")
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as ovm

    def _figure(plot):
        ax = plot(study)
        ax.figure.tight_layout()
        return ax.figure

    tracker.figure("figures/optimization_history.png", _figure, ovm.plot_optimization_history)
    if len(complete) >= 2 and len(best.params) >= 2:
        tracker.figure("figures/param_importances.png", _figure, ovm.plot_param_importances)
    del optuna
    return {"study": study.study_name, BEST_VAL_DICE: round(best.value, 4),
            "best_trial": best.number, **counts}
