"""What a stage returns: a result dataclass whose fields the next stage reads (the pipeline, tune,
the benchmarks), and whose :meth:`StageResult.summary` is the dict the command line prints as its
``done`` line (``covidseg finetune: done best_epoch=3 …``) and the pipeline records.

Field values are those of the ``done`` line (scores rounded to 4 places, the acceptance rate to
3): what the pipeline logs from them is what the line shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from covidseg.train.metric_keys import (
    SLICE_DICE_THRAVG,
    VAL_VOLUME_DICE,
    VOLUME_DICE,
    MetricKey,
    Moment,
    Split,
)

_ROUND = 4


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, _ROUND)


@dataclass
class StageResult:
    """A finished stage: its MLflow run (None without tracking) and :meth:`summary`."""

    run_id: str | None = field(default=None, kw_only=True)

    def summary(self) -> dict:
        raise NotImplementedError


def summary_of(result) -> dict:
    """The ``done``-line dict of a runner's result (a :class:`StageResult`, a dict, or None)."""
    if isinstance(result, StageResult):
        return result.summary()
    return dict(result or {})


@dataclass
class SplitScores:
    """The headline scores of one evaluated split: the mean volume Dice and, for 2D slice sets,
    the threshold-averaged slice Dice (None otherwise); ``moment`` ``final`` for the kept model's
    scores on its own training / validation cases."""

    split: Split
    volume_dice: float
    slice_dice_thravg: float | None = None
    moment: Moment = Moment.EPOCH

    @classmethod
    def of(cls, metrics: dict, split: Split | str, moment: Moment | str = Moment.EPOCH
           ) -> SplitScores:
        """Read from the metrics :func:`~covidseg.train.evaluation.log_evaluation` logged."""
        thravg = metrics.get(str(SLICE_DICE_THRAVG.of(split, moment)))
        return cls(Split(split), rounded(metrics[str(VOLUME_DICE.of(split, moment))]),
                   rounded(thravg), Moment(moment))

    def summary(self) -> dict:
        out = {str(VOLUME_DICE.of(self.split, self.moment)): self.volume_dice}
        if self.slice_dice_thravg is not None:
            out[str(SLICE_DICE_THRAVG.of(self.split, self.moment))] = self.slice_dice_thravg
        return out


def _scores_summary(scores: list[SplitScores]) -> dict:
    return {k: v for s in scores for k, v in s.summary().items()}


def _score_of(scores: list[SplitScores], split: Split) -> float | None:
    return next((s.volume_dice for s in scores if s.split == split), None)


@dataclass
class TrainedResult(StageResult):
    """``finetune`` (one fold) and ``meanteacher``: the kept epoch and its validation score, the
    decision threshold, the kept model's scores per split, its URI (a local folder without
    tracking); meanteacher: which network was kept (``student`` / ``teacher``)."""

    best_epoch: int
    best_val_volume_dice: float
    threshold: float
    scores: list[SplitScores]
    model_uri: str
    best_network: str | None = None

    @property
    def test_volume_dice(self) -> float | None:
        return _score_of(self.scores, Split.TEST)

    @property
    def val_volume_dice(self) -> float | None:
        """The kept model's final validation volume Dice (``final_val_volume_dice``)."""
        return _score_of(self.scores, Split.VAL)

    def summary(self) -> dict:
        out = {"best_epoch": self.best_epoch,
               str(VAL_VOLUME_DICE.at(Moment.BEST)): self.best_val_volume_dice,
               "threshold": self.threshold, **_scores_summary(self.scores),
               "model_uri": self.model_uri}
        if self.best_network is not None:
            out["best_network"] = self.best_network
        return out


@dataclass
class CrossValResult(StageResult):
    """``finetune -P cv=K``: the out-of-fold scores, each fold's validation volume Dice, the
    ensemble's test scores (when there is a test set) and its URI."""

    folds: int
    out_of_fold: SplitScores
    fold_dice: list[float]
    test: SplitScores | None
    model_uri: str

    @property
    def test_volume_dice(self) -> float | None:
        return self.test.volume_dice if self.test is not None else None

    def summary(self) -> dict:
        per_fold = MetricKey("dice_per_fold", VOLUME_DICE.level, Split.CV)
        out = {"cv_folds": self.folds, str(VOLUME_DICE.of(Split.CV)): self.out_of_fold.volume_dice,
               str(per_fold): " ".join(f"{d:.4f}" for d in self.fold_dice)}
        if self.out_of_fold.slice_dice_thravg is not None:
            out[str(SLICE_DICE_THRAVG.of(Split.CV))] = self.out_of_fold.slice_dice_thravg
        if self.test is not None:
            out.update(self.test.summary())
        return {**out, "model_uri": self.model_uri}


@dataclass
class PseudolabelResult(StageResult):
    """``pseudolabel``: how many candidates (patches or slices) were accepted, where the set was
    written, and — when the unlabelled cases carry a truth — the pooled Dice of the accepted
    labels against it."""

    source: str
    accepted: int
    candidates: int
    acceptance_rate: float  # rounded to 3 places
    pseudo_file: str
    oracle_dice_pooled: float | None = None

    def summary(self) -> dict:
        out = {"source": self.source, "accepted": self.accepted, "of": self.candidates,
               "acceptance_rate": self.acceptance_rate, "pseudo_file": self.pseudo_file}
        if self.oracle_dice_pooled is not None:
            out["oracle_pseudo_dice_pooled"] = self.oracle_dice_pooled
        return out


@dataclass
class CompareResult(StageResult):
    """``compare``: the layers compared, their mean SVCCA and the layer that moved most."""

    mode: str
    layers: int
    svcca_mean: float
    moved_most: str | None

    def summary(self) -> dict:
        return {"mode": self.mode, "layers": self.layers, "svcca_mean": self.svcca_mean,
                "moved_most": self.moved_most}


@dataclass
class PipelineResult(StageResult):
    """``pipeline``: the headline numbers of its stages (None where a stage gave none) and how
    many stage runs it nested."""

    finetune_test_volume_dice: float | None
    meanteacher_test_volume_dice: float | None
    pseudo_acceptance_rate: float | None
    pseudo_oracle_dice: float | None
    compare_svcca_mean: float | None
    stages: int

    def metrics(self) -> dict:
        """The numbers the pipeline run logs (those its stages gave)."""
        return {k: v for k, v in self.summary().items()
                if k != "stages" and isinstance(v, (int, float))}

    def summary(self) -> dict:
        return {"finetune_test_volume_dice": self.finetune_test_volume_dice,
                "meanteacher_test_volume_dice": self.meanteacher_test_volume_dice,
                "pseudo_acceptance_rate": self.pseudo_acceptance_rate,
                "pseudo_oracle_dice": self.pseudo_oracle_dice,
                "compare_svcca_mean": self.compare_svcca_mean, "stages": self.stages}


@dataclass
class PredictResult(StageResult):
    """``predict``: where the masks went, how many inputs were predicted and failed, and the
    severity of the first five."""

    output: str
    predicted: int
    failed: int
    severity: list = field(default_factory=list)

    def summary(self) -> dict:
        return {"output": self.output, "n_predicted": self.predicted, "n_failed": self.failed,
                "severity": ",".join(str(s) for s in self.severity)}


@dataclass
class EvaluateResult(StageResult):
    """``evaluate``: the logged metrics of the evaluated split whose names end in
    ``volume_dice``, ``nsd``, ``nsd_area`` or ``dice_thravg``, rounded."""

    scores: dict

    @classmethod
    def of(cls, metrics: dict, run_id: str | None = None) -> EvaluateResult:
        return cls({k: round(v, _ROUND) for k, v in metrics.items()
                    if k.endswith(("volume_dice", "nsd", "nsd_area", "dice_thravg"))},
                   run_id=run_id)

    def summary(self) -> dict:
        return dict(self.scores)
