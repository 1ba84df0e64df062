"""``pipeline``: preprocess → pretrain → finetune → pseudolabel → meanteacher → compare as one
parent run with the stages nested under it, each stage's output wired into the next by run id
(the same lineage tags as when the stages are run one by one).

Every input a stage accepts is a pipeline parameter (the user's own data: ``dataset``, ``images``,
``masks``, ``preprocess_unlabelled`` …; ``coarse_model``, ``pseudolabel_unlabelled``,
``meanteacher_unlabelled``, ``strategy``); ``init`` replaces the pretrain stage by the user's
starting point (``scratch``, a run, a Models Genesis file)."""

from __future__ import annotations

from dataclasses import fields

from covidseg.base.errors import ConfigError
from covidseg.config import CONFIGS, PIPELINE_STAGES
from covidseg.stages.results import PipelineResult, StageResult, summary_of
from covidseg.tracking.tags import Tag


def stage_config(cfg, stage: str, **wired):
    """The stage's own config from the pipeline's parameters (+ the wired run ids)."""
    cls = CONFIGS[stage]
    prefixed = type(cfg).prefixed
    kwargs = {}
    for f in fields(cls):
        if f.name in wired:
            kwargs[f.name] = wired[f.name]
        elif f.name in ("data", "seed", "device"):
            kwargs[f.name] = getattr(cfg, f.name)
        elif f.name in type(cfg).stage_fields[stage]:
            kwargs[f.name] = getattr(cfg, f"{stage}_{f.name}" if f.name in prefixed else f.name)
    out = cls(**kwargs)
    out.validate()
    return out


def run_nested(parent, entry_point: str, cfg, name: str, tags: dict | None = None,
               on_start=None, **kwargs) -> tuple[str, StageResult | dict]:
    """Run entry point ``entry_point`` with ``cfg`` as a run nested under ``parent``;
    returns (its run id, its result).  ``on_start(run_id)`` is called once the run exists."""
    from covidseg.stages.registry import runner
    from covidseg.tracking import child_run

    fn = runner(entry_point)
    with child_run(parent, name, entry_point, cfg.to_params(), tags) as child:
        if on_start is not None:
            on_start(child.run_id)
        result = fn(cfg, child, **kwargs)
    return child.run_id, result if result is not None else {}


def _is_run_reference(init: str) -> bool:
    """A run id or runs:/ / models:/ URI (not ``scratch``, not a checkpoint file)."""
    from pathlib import Path

    return bool(init) and init != "scratch" and not Path(init).expanduser().exists()


def pipeline(cfg, tracker) -> PipelineResult:
    if not tracker.enabled:
        raise ConfigError("pipeline nests its stages as MLflow runs: tracking must be on")
    if getattr(cfg, "labels", "binary") == "multiclass":
        raise ConfigError("labels=multiclass: pseudolabel and meanteacher learn binary lesion "
                          "masks; run preprocess and finetune on multi-class data instead")
    runs: dict[str, str] = {}
    results: dict = {}  # stage -> its result (a StageResult; preprocess, pretrain: a dict)

    def stage(name: str, **wired):
        scfg = stage_config(cfg, name, **wired)
        index = PIPELINE_STAGES.index(name) + 1
        runs[name], results[name] = run_nested(tracker, name, scfg, f"{index}-{name}",
                                               {Tag.PIPELINE_STAGE: name})
        tracker.set_tags({Tag.stage(name): runs[name]})
        return runs[name]

    pre = stage("preprocess", data=cfg.data)
    init = cfg.init.strip()
    if init:  # the user's own starting point: no pretrain stage
        tracker.set_tags({Tag.stage("pretrain"): f"skipped: init={init}"})
    else:
        init = stage("pretrain", data=pre)
    ft = stage("finetune", data=pre, init=init)
    pl = stage("pseudolabel", data=pre, model=ft)
    stage("meanteacher", data=pre, model=ft, pseudo=pl)
    compare_mode = stage_config(cfg, "compare", data=pre, runs=ft).mode
    if compare_mode == "init-vs-final" and not _is_run_reference(init):
        results["compare"] = None
        tracker.set_tags({Tag.stage("compare"): "skipped: init-vs-final needs a pretrained "
                                                 f"run as init, not {init!r}"})
    else:
        stage("compare", data=pre, runs=ft)
    pseudo, compared = results["pseudolabel"], results["compare"]
    result = PipelineResult(
        finetune_test_volume_dice=results["finetune"].test_volume_dice,
        meanteacher_test_volume_dice=results["meanteacher"].test_volume_dice,
        pseudo_acceptance_rate=pseudo.acceptance_rate,
        pseudo_oracle_dice=pseudo.oracle_dice_pooled,
        compare_svcca_mean=compared.svcca_mean if compared is not None else None,
        stages=len(runs), run_id=tracker.run_id)
    tracker.log_metrics(result.metrics())
    tracker.log_dict({"runs": runs, "results": {k: {kk: str(vv) for kk, vv in
                                                     summary_of(v).items()}
                                                 for k, v in results.items()}}, "pipeline.json")
    return result
