"""Reproducible splits: a fixed held-out test set and k folds over the remaining labelled cases.

Two training regimes per fold, as in the thesis (50 labelled volumes in 5 folds of 10):

* ``standard`` (alias ``40-10``): train on the other k-1 folds, validate on fold k;
* ``inverse``  (alias ``10-40``): train on fold k only, validate on the other k-1 folds.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from covidseg.base.errors import ConfigError
from covidseg.data.vocabulary import Regime

REGIME_ALIASES = {Regime.STANDARD: Regime.STANDARD, Regime.INVERSE: Regime.INVERSE,
                  Regime.FORTY_TEN: Regime.STANDARD, Regime.TEN_FORTY: Regime.INVERSE}


@dataclass
class Splits:
    """A dataset's ``splits.json``: the held-out test ids, the k folds of the other labelled
    cases, the unlabelled pool and (``auxiliary``) the labelled non-COVID cases of supervised
    pretraining.  :meth:`to_json` is the on-disk dict (its keys in this order; ``auxiliary``
    only when set), :meth:`from_json` reads it back."""

    seed: int
    test: list[str]
    test_is_official: bool
    folds: list[list[str]]
    unlabelled: list[str]
    auxiliary: list[str] | None = None

    def to_json(self) -> dict:
        out = {"seed": self.seed, "test": self.test, "test_is_official": self.test_is_official,
               "folds": self.folds, "unlabelled": self.unlabelled}
        if self.auxiliary is not None:
            out["auxiliary"] = self.auxiliary
        return out

    @classmethod
    def from_json(cls, d: dict) -> Splits:
        return cls(seed=d["seed"], test=list(d["test"]),
                   test_is_official=bool(d.get("test_is_official", False)),
                   folds=[list(f) for f in d["folds"]], unlabelled=list(d.get("unlabelled", [])),
                   auxiliary=list(d["auxiliary"]) if "auxiliary" in d else None)

    def fold(self, fold: int, regime: str = "standard") -> tuple[list[str], list[str]]:
        """(train ids, validation ids) of one fold in one regime."""
        if not self.folds:
            raise ConfigError("this dataset was preprocessed with folds=0: no validation split")
        if not 0 <= fold < len(self.folds):
            raise ConfigError(f"fold={fold} is out of range: the dataset has {len(self.folds)} "
                              "folds")
        if regime not in REGIME_ALIASES:
            raise ConfigError(f"regime={regime!r} is not one of {', '.join(REGIME_ALIASES)}")
        others = sorted(c for k, f in enumerate(self.folds) if k != fold for c in f)
        if REGIME_ALIASES[regime] == Regime.STANDARD:
            return others, list(self.folds[fold])
        return list(self.folds[fold]), others


def make_splits(labelled: list[str], test_cases: int = 20, folds: int = 5, seed: int = 0,
                official_test: list[str] | None = None,
                unlabelled: list[str] | None = None, not_test: list[str] | None = None,
                given_folds: dict[str, int] | None = None) -> Splits:
    """Split labelled case ids into test + k folds (deterministic for a seed and a set of ids);
    ``not_test`` cases are never drawn into the test set (they always train/validate);
    ``given_folds`` (case id -> fold, e.g. nnU-Net's ``splits_final.json``) are the folds
    instead (their number wins over ``folds``; other non-test cases join them in turn)."""
    ids = sorted(set(labelled))
    official = sorted(set(official_test or []) & set(ids))
    given = {c: k for c, k in (given_folds or {}).items() if c in set(ids) and c not in official}
    if given:
        n_given = max(given.values()) + 1
        if n_given != folds:
            warnings.warn(f"the dataset defines {n_given} folds: folds={folds} is not used",
                          stacklevel=2)
        folds = n_given
    keep = (set(not_test or []) | set(given)) & set(ids)
    rng = np.random.default_rng(seed)
    if official:
        test = official
        pool = [i for i in ids if i not in set(official)]
        pool = [pool[j] for j in rng.permutation(len(pool))]
    else:
        drawable = [i for i in ids if i not in keep]
        perm = [drawable[j] for j in rng.permutation(len(drawable))]
        n_test = min(int(test_cases), len(drawable))
        if folds > 0 and len(ids) - n_test < folds:
            n_test = max(0, len(ids) - folds)
            warnings.warn(f"only {len(ids)} labelled cases: test set reduced to {n_test} so that "
                          f"each of the {folds} folds has a case", stacklevel=2)
        test = sorted(perm[:n_test])
        pool = perm[n_test:] + [i for i in ids if i in keep]
    if folds > 0 and len(pool) < folds:
        raise ConfigError(f"folds={folds} needs at least {folds} labelled cases outside the test "
                          f"set; there are {len(pool)}")
    fold_lists = [sorted(pool[k::folds]) for k in range(folds)] if folds > 0 else []
    if given:
        fold_lists = [[c for c, k in given.items() if k == f] for f in range(folds)]
        rest = [c for c in pool if c not in given]
        if rest:
            warnings.warn(f"{len(rest)} labelled cases are in none of the dataset's folds: "
                          "dealt to the folds in turn", stacklevel=2)
        for j, c in enumerate(rest):
            fold_lists[j % folds].append(c)
        fold_lists = [sorted(f) for f in fold_lists]
    return Splits(seed=seed, test=test, test_is_official=bool(official), folds=fold_lists,
                  unlabelled=sorted(set(unlabelled or [])))


def fold_split(splits: Splits, fold: int, regime: str = "standard") -> tuple[list[str], list[str]]:
    """(train ids, validation ids) of one fold in one regime (:meth:`Splits.fold`)."""
    return splits.fold(fold, regime)
