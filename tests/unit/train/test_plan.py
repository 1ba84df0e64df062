"""The plan a dataset's fingerprint decides (covidseg.train.plan), and the raw-folder route:
a folder given as data= is preprocessed at the size the plan derives from its slices."""

from pathlib import Path

import numpy as np
import pytest

from covidseg.train.plan import (
    ITERATIONS_PER_EPOCH,
    MIN_ITERATIONS,
    PlanRequest,
    make_plan,
    planned,
    slice_size_for,
    total_iterations,
)


class _Dataset:
    """What make_plan reads of a preprocessed dataset: case shapes and the slice flag."""

    def __init__(self, shapes, slices: bool, image_size: int = 0):
        self.cases = {f"c{i}": {"shape": list(s), "slice_image": slices}
                      for i, s in enumerate(shapes)}
        self.descriptor = {"config": {"image_size": image_size}}


def test_slice_size_is_the_median_longer_side_to_a_multiple_of_32():
    assert slice_size_for([(397, 361), (400, 300), (153, 487), (221, 200)]) == 384
    assert slice_size_for([(100, 90)] * 3) == 96
    assert slice_size_for([(20, 30)]) == 64 and slice_size_for([(2000, 900)]) == 512


def test_iterations_from_passes_with_a_floor_and_a_ceiling():
    assert total_iterations(40, 8) == MIN_ITERATIONS  # 60 passes = 300 steps: the floor
    assert total_iterations(400, 8) == 3000
    assert total_iterations(10 ** 6, 8) == 20000


def test_plan_for_slices_volumes_the_thesis_and_given_values():
    slices = _Dataset([(1, 384, 384)] * 40, True, image_size=384)
    plan = make_plan(slices, list(slices.cases), PlanRequest())
    assert plan.kind == "2d-slices" and plan.image_size == 384 and plan.training_slices == 40
    assert plan.iterations_per_epoch == ITERATIONS_PER_EPOCH
    assert plan.epochs * plan.iterations_per_epoch == plan.total_iterations == 1000
    assert planned(plan, "epochs") == 20 and plan.given == {} and plan.why["epochs"]

    volumes = _Dataset([(30, 128, 128)] * 10, False)
    plan = make_plan(volumes, list(volumes.cases), PlanRequest())
    assert plan.kind == "volumes" and plan.image_size == 0 and plan.training_slices == 300
    assert plan.total_iterations == 60 * 300 // 8 == 2250  # 45 epochs of 50

    given = make_plan(volumes, list(volumes.cases), PlanRequest(epochs=3, iterations_per_epoch=7))
    assert given.given == {"epochs": 3, "iterations_per_epoch": 7}
    assert planned(given, "epochs") == 3 and given.total_iterations == 21

    thesis = make_plan(volumes, list(volumes.cases), PlanRequest(recipe="thesis"))
    assert thesis.iterations_per_epoch == 0 and planned(thesis, "epochs") == 500  # one pass

    coarse = make_plan(volumes, list(volumes.cases), PlanRequest(), three_d=True)
    assert coarse.iterations_per_epoch == 0 and coarse.epochs == 100


def test_a_raw_slice_folder_is_preprocessed_at_the_planned_size(tmp_path):
    """data=FOLDER with labelled/images + labelled/masks: the layout is detected, the slices
    resized to the plan's side, no test set held out without an official one."""
    import cv2

    from covidseg.stages.datasets import raw_preprocess_config, resolve_dataset

    rng = np.random.default_rng(0)
    for sub in ("labelled/images", "labelled/masks", "unlabelled/images"):
        (tmp_path / sub).mkdir(parents=True)
    for i, (h, w) in enumerate([(150, 130), (160, 120), (140, 170), (155, 150), (120, 100),
                                (150, 150)]):
        image = rng.integers(0, 255, (h, w), dtype=np.uint8)
        mask = np.zeros((h, w), np.uint8)
        mask[h // 3: h // 2, w // 3: w // 2] = 255
        cv2.imwrite(str(tmp_path / "labelled/images" / f"{i}.jpg"), image)
        cv2.imwrite(str(tmp_path / "labelled/masks" / f"{i}.png"), mask)
    cv2.imwrite(str(tmp_path / "unlabelled/images/u0.jpg"), rng.integers(0, 255, (140, 140),
                                                                         dtype=np.uint8))
    cfg = raw_preprocess_config(Path(tmp_path))
    assert cfg.image_size == 160 and cfg.test_cases == 0  # median longer side 150 → 160
    ds, source = resolve_dataset(str(tmp_path))
    assert source is None and int(ds.descriptor["config"]["image_size"]) == 160
    assert ds.splits.test == [] and len(ds.splits.unlabelled) == 1
    assert sum(len(f) for f in ds.splits.folds) == 6
    shape = ds.cases["0"]["shape"]
    assert shape[1:] == [160, 160]
    with pytest.raises(Exception, match="is not a preprocess run id"):
        resolve_dataset(str(tmp_path / "nowhere"))
