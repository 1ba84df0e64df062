"""``splits.json`` reads back as a :class:`Splits` dataclass and writes the same bytes."""

from __future__ import annotations

import json

import pytest

from covidseg.base.errors import ConfigError
from covidseg.data.splits import Splits, make_splits

ON_DISK = {"seed": 3, "test": ["c1", "c4"], "test_is_official": False,
           "folds": [["c0", "c2"], ["c3", "c5"]], "unlabelled": ["u1", "u0"],
           "auxiliary": ["n0"]}


@pytest.mark.parametrize("stored", [ON_DISK, {k: v for k, v in ON_DISK.items()
                                              if k != "auxiliary"}])
def test_the_file_reads_back_as_fields_and_writes_the_same_bytes(stored):
    text = json.dumps(stored, indent=1)
    splits = Splits.from_json(json.loads(text))
    assert splits.test == ["c1", "c4"] and splits.folds[1] == ["c3", "c5"]
    assert splits.unlabelled == ["u1", "u0"]  # the order on disk, as written
    assert json.dumps(splits.to_json(), indent=1) == text


def test_a_fold_in_each_regime_and_its_errors():
    splits = Splits.from_json(ON_DISK)
    assert splits.fold(0) == (["c3", "c5"], ["c0", "c2"])
    assert splits.fold(0, "10-40") == (["c0", "c2"], ["c3", "c5"])
    with pytest.raises(ConfigError, match="fold=2 is out of range"):
        splits.fold(2)
    with pytest.raises(ConfigError, match="regime='x'"):
        splits.fold(0, "x")
    with pytest.raises(ConfigError, match="folds=0"):
        Splits(seed=0, test=[], test_is_official=False, folds=[], unlabelled=[]).fold(0)


def test_make_splits_gives_the_dataclass():
    s = make_splits([f"c{i}" for i in range(8)], test_cases=2, folds=2, seed=1,
                    unlabelled=["u1", "u0"])
    assert isinstance(s, Splits) and len(s.test) == 2 and len(s.folds) == 2
    assert s.unlabelled == ["u0", "u1"] and s.auxiliary is None
    assert list(s.to_json()) == ["seed", "test", "test_is_official", "folds", "unlabelled"]
