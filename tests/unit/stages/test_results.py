"""Stage results: typed fields for the stages that read them, and ``summary()`` — the ``done`` line
the command line prints — with the keys, order and values it always had."""

from __future__ import annotations

from covidseg.stages.results import (
    CrossValResult,
    PipelineResult,
    PseudolabelResult,
    SplitScores,
    TrainedResult,
    summary_of,
)
from covidseg.train.metric_keys import Moment, Split


def _trained(**kw) -> TrainedResult:
    metrics = {"final_train_volume_dice": 0.61234, "final_val_volume_dice": 0.55556,
               "final_val_slice_dice_thravg": 0.4321, "test_volume_dice": 0.49999}
    scores = [SplitScores.of(metrics, Split.TRAIN, Moment.FINAL),
              SplitScores.of(metrics, Split.VAL, Moment.FINAL),
              SplitScores.of(metrics, Split.TEST)]
    return TrainedResult(best_epoch=3, best_val_volume_dice=0.6, threshold=0.5, scores=scores,
                         model_uri="models:/m-1", run_id="r1", **kw)


def test_a_trained_result_reads_as_fields_and_prints_the_old_done_line():
    r = _trained()
    assert r.test_volume_dice == 0.5 and r.val_volume_dice == 0.5556 and r.run_id == "r1"
    assert list(r.summary().items()) == [
        ("best_epoch", 3), ("best_val_volume_dice", 0.6), ("threshold", 0.5),
        ("final_train_volume_dice", 0.6123), ("final_val_volume_dice", 0.5556),
        ("final_val_slice_dice_thravg", 0.4321), ("test_volume_dice", 0.5),
        ("model_uri", "models:/m-1")]
    assert list(_trained(best_network="teacher").summary())[-1] == "best_network"
    assert summary_of(r) == r.summary() and summary_of({"a": 1}) == {"a": 1}
    assert summary_of(None) == {}


def test_cross_validation_and_pseudolabel_summaries():
    cv = CrossValResult(folds=2, out_of_fold=SplitScores(Split.CV, 0.41), fold_dice=[0.062, 0.02],
                        test=SplitScores(Split.TEST, 0.0266), model_uri="u")
    assert list(cv.summary().items()) == [
        ("cv_folds", 2), ("cv_volume_dice", 0.41), ("cv_volume_dice_per_fold", "0.0620 0.0200"),
        ("test_volume_dice", 0.0266), ("model_uri", "u")]
    pl = PseudolabelResult(source="model", accepted=31, candidates=35, acceptance_rate=0.886,
                           pseudo_file="p.npz", oracle_dice_pooled=0.0388)
    assert list(pl.summary()) == ["source", "accepted", "of", "acceptance_rate", "pseudo_file",
                                  "oracle_pseudo_dice_pooled"]


def test_the_pipeline_logs_only_the_numbers_its_stages_gave():
    r = PipelineResult(finetune_test_volume_dice=0.5, meanteacher_test_volume_dice=0.6,
                       pseudo_acceptance_rate=0.9, pseudo_oracle_dice=None,
                       compare_svcca_mean=None, stages=5)
    assert r.metrics() == {"finetune_test_volume_dice": 0.5, "meanteacher_test_volume_dice": 0.6,
                           "pseudo_acceptance_rate": 0.9}
    assert r.summary()["pseudo_oracle_dice"] is None and r.summary()["stages"] == 5


def test_predict_and_evaluate_results_give_the_dicts_their_entry_points_return():
    from covidseg.stages.results import EvaluateResult, PredictResult

    p = PredictResult(output="o", predicted=2, failed=1, severity=["mild", "severe"])
    assert p.summary() == {"output": "o", "n_predicted": 2, "n_failed": 1,
                           "severity": "mild,severe"}
    e = EvaluateResult.of({"test_volume_dice": 0.123456, "test_volume_hd95": 3.0,
                           "test_volume_nsd": 0.5, "test_slice_dice_thravg": 0.25})
    assert e.summary() == {"test_volume_dice": 0.1235, "test_volume_nsd": 0.5,
                           "test_slice_dice_thravg": 0.25}
