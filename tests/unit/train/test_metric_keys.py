"""Metric names come from one :class:`MetricKey` and are the names covidseg has always logged (the
MLflow UI, the benchmarks, the model card and the docs read them)."""

from __future__ import annotations

import numpy as np
import pytest

from covidseg.tracking import NullTracker
from covidseg.train.evaluation import Evaluation, log_evaluation, score_case
from covidseg.train.metric_keys import (
    TEST_VOLUME_DICE,
    VAL_VOLUME_DICE,
    Level,
    MetricKey,
    Moment,
    Split,
    keyed,
)

# names logged by a seeded finetune, cv and meanteacher before MetricKey existed (a sample of
# every shape: moments, splits, levels, classes, suffixes, and names outside the vocabulary)
LOGGED = ["val_volume_dice", "best_val_volume_dice", "start_val_volume_dice", "final_val_ece",
          "final_train_volume_dice", "test_volume_nsd_area", "test_volume_hd95_undefined",
          "test_volume_dice_resampled", "test_volume_hd95_resampled_undefined",
          "test_volume_dice_ground_glass_resampled", "test_slice_dice_thravg_resampled",
          "cv_volume_dice_fold_std", "cv_volumes", "train_loss", "lr", "epoch_seconds",
          "val_restoration_mse", "start_val_volume_dice_student", "best_trial",
          "labelled_volume_nsd", "threshold", "oracle_pseudo_dice_pooled", "test_slice_dice"]


@pytest.mark.parametrize("name", LOGGED)
def test_names_read_back_into_keys_that_print_them_unchanged(name):
    assert str(MetricKey.parse(name)) == name


def test_a_key_names_its_parts():
    key = MetricKey.parse("final_val_volume_hd95_resampled_undefined")
    assert (key.moment, key.split, key.level, key.name, key.variant) == \
        (Moment.FINAL, Split.VAL, Level.VOLUME, "hd95", ("resampled", "undefined"))
    assert str(VAL_VOLUME_DICE) == "val_volume_dice" and str(TEST_VOLUME_DICE) == "test_volume_dice"
    assert str(VAL_VOLUME_DICE.at("best")) == "best_val_volume_dice"
    assert str(MetricKey("dice", Level.VOLUME, variant=("ground_glass",)).of("test", "final")) == \
        "final_test_volume_dice_ground_glass"
    assert keyed({"volume_dice": 1.0, "ece": 0.5}, "val", "start") == \
        {"start_val_volume_dice": 1.0, "start_val_ece": 0.5}
    with pytest.raises(ValueError):
        MetricKey("dice").of("validation")


def _evaluation() -> Evaluation:
    ref = np.zeros((3, 12, 12), bool)
    ref[1, 3:7, 3:7] = True
    rows = []
    for shift in (0, 1):
        pred = np.roll(ref, shift, axis=2)
        row = {"case_id": f"c{shift}", "split": "test", "source": "", "grid": "original",
               **score_case(pred, ref, (2.0, 1.0, 1.0), area=False)}
        row.update({f"{k}_resampled": v for k, v in score_case(pred, ref, (2.0, 1.0, 1.0),
                                                              area=False).items()})
        rows.append(row)
    ev = Evaluation(rows=rows)
    ev.calibration.add(ref.astype(float) * 0.8, ref)
    return ev


def test_an_evaluation_logs_the_names_it_always_logged():
    metrics = log_evaluation(NullTracker(), _evaluation(), "val", "val", Moment.FINAL)
    volume = ["dice", "iou", "hd95", "nsd", "sensitivity", "precision"]
    expected = {f"final_val_volume_{k}{s}" for k in volume for s in ("", "_resampled")}
    expected |= {"final_val_slice_dice", "final_val_slice_dice_resampled", "final_val_volumes",
                 "final_val_ece", "final_val_lesion_probability",
                 "final_val_background_confident"}
    assert set(metrics) == expected
    assert metrics["final_val_volume_dice"] == pytest.approx((1.0 + 0.75) / 2)
