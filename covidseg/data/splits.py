"""Reproducible splits: a fixed held-out test set and k folds over the remaining labelled cases.

Two training regimes per fold, as in the thesis (50 labelled volumes in 5 folds of 10):

* ``standard`` (alias ``40-10``): train on the other k-1 folds, validate on fold k;
* ``inverse``  (alias ``10-40``): train on fold k only, validate on the other k-1 folds.
"""

from __future__ import annotations

import warnings

import numpy as np

from covidseg.data.vocabulary import Regime
from covidseg.errors import ConfigError

REGIME_ALIASES = {Regime.STANDARD: Regime.STANDARD, Regime.INVERSE: Regime.INVERSE,
                  Regime.FORTY_TEN: Regime.STANDARD, Regime.TEN_FORTY: Regime.INVERSE}


def make_splits(labelled: list[str], test_cases: int = 20, folds: int = 5, seed: int = 0,
                official_test: list[str] | None = None,
                unlabelled: list[str] | None = None, not_test: list[str] | None = None,
                given_folds: dict[str, int] | None = None) -> dict:
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
    return {
        "seed": seed,
        "test": test,
        "test_is_official": bool(official),
        "folds": fold_lists,
        "unlabelled": sorted(set(unlabelled or [])),
    }


def fold_split(splits: dict, fold: int, regime: str = "standard") -> tuple[list[str], list[str]]:
    """(train ids, validation ids) of one fold in one regime."""
    folds = splits["folds"]
    if not folds:
        raise ConfigError("this dataset was preprocessed with folds=0: no validation split")
    if not 0 <= fold < len(folds):
        raise ConfigError(f"fold={fold} is out of range: the dataset has {len(folds)} folds")
    if regime not in REGIME_ALIASES:
        raise ConfigError(f"regime={regime!r} is not one of {', '.join(REGIME_ALIASES)}")
    others = sorted(c for k, f in enumerate(folds) if k != fold for c in f)
    if REGIME_ALIASES[regime] == Regime.STANDARD:
        return others, list(folds[fold])
    return list(folds[fold]), others
