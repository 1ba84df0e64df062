import numpy as np
import pytest

from covidseg.train.metrics import slice_metrics, summarise, volume_metrics


def cube(shape, start, size):
    m = np.zeros(shape, bool)
    m[tuple(slice(s, s + size) for s in start)] = True
    return m


@pytest.mark.parametrize("axis,k,spacing", [(0, 2, (2.5, 0.7, 0.7)), (1, 3, (1.0, 0.8, 0.6)),
                                            (2, 1, (5.0, 1.0, 1.5))])
def test_shifted_cube_hd95_is_k_times_spacing(axis, k, spacing):
    ref = cube((30, 30, 30), (10, 10, 10), 10)
    start = [10, 10, 10]
    start[axis] += k
    pred = cube((30, 30, 30), start, 10)
    m = volume_metrics(pred, ref, spacing)
    assert m["hd95"] == pytest.approx(k * spacing[axis])
    assert m["dice"] == pytest.approx(2 * 10 * 10 * (10 - k) / 2000)
    assert m["iou"] == pytest.approx((10 - k) / (10 + k))


def test_identical_disjoint_and_empty_policy():
    ref = cube((20, 20, 20), (5, 5, 5), 6)
    same = volume_metrics(ref, ref, (1, 1, 1))
    assert same == {"dice": 1.0, "iou": 1.0, "sensitivity": 1.0, "precision": 1.0, "hd95": 0.0,
                    "nsd": 1.0}
    far = cube((20, 20, 20), (14, 14, 14), 4)
    dis = volume_metrics(far, ref, (1, 1, 1))
    assert dis["dice"] == 0 and dis["iou"] == 0 and dis["nsd"] == 0 and dis["hd95"] > 3
    empty = np.zeros_like(ref)
    both = volume_metrics(empty, empty, (1, 1, 1))
    assert both["dice"] == 1 and both["hd95"] == 0 and both["nsd"] == 1
    missed = volume_metrics(empty, ref, (1, 1, 1))
    assert missed["dice"] == 0 and np.isnan(missed["hd95"]) and missed["sensitivity"] == 0
    assert np.isnan(missed["precision"])
    false_alarm = volume_metrics(ref, empty, (1, 1, 1))
    assert false_alarm["precision"] == 0 and np.isnan(false_alarm["sensitivity"])


def test_nsd_tolerance_in_millimetres():
    ref = cube((10, 40, 40), (2, 10, 10), 6)
    pred = cube((10, 40, 40), (2, 12, 10), 6)  # shifted 2 voxels in y
    assert volume_metrics(pred, ref, (1, 1.0, 1), tolerance_mm=3)["nsd"] == 1.0  # 2 mm ≤ 3 mm
    assert volume_metrics(pred, ref, (1, 2.0, 1), tolerance_mm=3)["nsd"] < 1.0  # 4 mm > 3 mm


def test_slice_level_and_summary():
    ref = cube((3, 20, 20), (0, 5, 5), 3)
    pred = ref.copy()
    pred[2] = False
    rows = slice_metrics(pred, ref, (0.5, 0.5))
    assert [r["dice"] for r in rows] == [1.0, 1.0, 0.0]
    s = summarise(rows, prefix="slice_")
    assert s["slice_dice"] == pytest.approx(2 / 3) and s["slice_hd95_undefined"] == 1.0


def test_calibration_state_round_trips_and_merges_like_one_accumulator():
    """Folds scored apart (to_dict → JSON → from_dict, then merge) give the summary of one
    accumulator that saw every pixel."""
    import json

    from covidseg.train.calibration import Calibration

    rng = np.random.default_rng(0)
    probs = [rng.random((20, 30)) for _ in range(3)]
    refs = [rng.random((20, 30)) < p for p in probs]
    whole = Calibration()
    for p, r in zip(probs, refs):
        whole.add(p, r)
    first, second = Calibration(), Calibration()
    first.add(probs[0], refs[0])
    for p, r in zip(probs[1:], refs[1:]):
        second.add(p, r)
    merged = Calibration.from_dict(json.loads(json.dumps(first.to_dict())))
    merged.merge(Calibration.from_dict(json.loads(json.dumps(second.to_dict()))))
    assert merged.summary() == pytest.approx(whole.summary())
    assert all(a == pytest.approx(b) for a, b in zip(merged.table(), whole.table()))
    assert whole.summary()["background_confident"] > 0


def test_confident_lesion_counts_the_pixels_at_or_above_the_threshold():
    from covidseg.train.calibration import Calibration

    # p:    0.95 0.95 0.75 0.55 0.55 0.15 0.05
    # ref:  1    0    1    1    0    1    0
    prob = np.array([0.95, 0.95, 0.75, 0.55, 0.55, 0.15, 0.05])
    ref = np.array([1, 0, 1, 1, 0, 1, 0], bool)
    cal = Calibration()
    cal.add(prob, ref)
    assert cal.confident_lesion(0.9) == {"precision": 0.5, "recall": 0.25, "share": 2 / 7}
    assert cal.confident_lesion(0.5) == {"precision": 0.6, "recall": 0.75, "share": 5 / 7}
    assert cal.confident_lesion(0.0)["recall"] == 1.0
    with pytest.raises(ValueError):
        cal.confident_lesion(0.95)  # not an edge of 10 bins
