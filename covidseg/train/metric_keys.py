"""Metric names, built in one place: :class:`MetricKey` (split, level, name) → ``val_volume_dice``.

A logged metric's name reads, joined by ``_``::

    [moment] [split] [level] name [class] [resampled] [undefined]
    final    val     volume  dice                        → final_val_volume_dice
             test    slice   dice_thravg                  → test_slice_dice_thravg
             test    volume  dice ground_glass resampled  → test_volume_dice_ground_glass_resampled
    start    val             ece                          → start_val_ece

* ``moment`` — when the number was taken: nothing for the per-epoch series and the test scores,
  ``final`` for the kept model's scores on its own training and validation cases, ``best`` for
  the best so far of a per-epoch series, ``start`` for the starting model before any step;
* ``split`` — ``train``, ``val``, ``test``, ``cv`` (out-of-fold); nothing for a per-case column
  (the rows of ``tables/*_per_volume.csv`` are named ``volume_dice``, ``slice_dice`` …);
* ``level`` — ``volume`` (3D, one value per volume), ``slice`` (2D, per slice image or lesion
  slice); nothing for split-wide numbers (pixel calibration ``ece``, the count ``volumes``);
* ``variant`` — the suffixes: a lesion class, ``resampled`` (scored on the preprocessed grid),
  ``undefined`` (how many cases had no value).

The MLflow UI, the benchmarks, the model card and the docs read these names: ``str(key)`` is the
name as logged; :meth:`MetricKey.parse` reads one back (``str(MetricKey.parse(s)) == s``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from covidseg.data.vocabulary import Vocabulary


class Split(Vocabulary):
    TRAIN = "train"
    VAL = "val"
    TEST = "test"
    CV = "cv"  # out-of-fold: every case scored by the fold model that did not train on it
    LABELLED = "labelled"  # ``evaluate -P split=labelled``: every labelled case
    NONE = ""  # a per-case column


class Level(Vocabulary):
    VOLUME = "volume"
    SLICE = "slice"
    NONE = ""  # split-wide: calibration, counts


class Moment(Vocabulary):
    EPOCH = ""  # the per-epoch series; a test score
    FINAL = "final"  # the kept model, scored on its own training / validation cases
    BEST = "best"  # the best of a per-epoch series so far
    START = "start"  # the starting model, before the first step


RESAMPLED = "resampled"
UNDEFINED = "undefined"
_SUFFIXES = (UNDEFINED, RESAMPLED)  # read back from the end, last one first


@dataclass(frozen=True)
class MetricKey:
    """One metric's name (see the module docstring); ``str()`` is the logged name."""

    name: str
    level: Level = Level.NONE
    split: Split = Split.NONE
    moment: Moment = Moment.EPOCH
    variant: tuple[str, ...] = ()

    def __str__(self) -> str:
        parts = (self.moment, self.split, self.level, self.name, *self.variant)
        return "_".join(p for p in parts if p)

    def of(self, split: Split | str, moment: Moment | str = Moment.EPOCH) -> MetricKey:
        """This column's (or metric's) key for ``split`` at ``moment``."""
        return replace(self, split=Split(split), moment=Moment(moment))

    def at(self, moment: Moment | str) -> MetricKey:
        return replace(self, moment=Moment(moment))

    def with_suffix(self, *suffix: str) -> MetricKey:
        return replace(self, variant=(*self.variant, *suffix))

    @classmethod
    def parse(cls, text: str) -> MetricKey:
        """The key of a logged name (anything not recognised stays in ``name``)."""
        tokens = text.split("_")
        moment = Moment(tokens.pop(0)) if len(tokens) > 1 and tokens[0] in _MOMENTS else \
            Moment.EPOCH
        split = Split(tokens.pop(0)) if len(tokens) > 1 and tokens[0] in _SPLITS else Split.NONE
        level = Level(tokens.pop(0)) if len(tokens) > 1 and tokens[0] in _LEVELS else Level.NONE
        variant: list[str] = []
        for suffix in _SUFFIXES:
            if len(tokens) > 1 and tokens[-1] == suffix:
                variant.insert(0, tokens.pop())
        return cls("_".join(tokens), level, split, moment, tuple(variant))


_MOMENTS = {m.value for m in Moment if m.value}
_SPLITS = {s.value for s in Split if s.value}
_LEVELS = {lv.value for lv in Level if lv.value}


def keyed(metrics: dict, split: Split | str, moment: Moment | str = Moment.EPOCH) -> dict:
    """``metrics`` named by column (``volume_dice`` …) renamed for ``split`` at ``moment``."""
    return {str(MetricKey.parse(k).of(split, moment)): v for k, v in metrics.items()}


# the names the stages read back
VOLUME_DICE = MetricKey("dice", Level.VOLUME)
SLICE_DICE_THRAVG = MetricKey("dice_thravg", Level.SLICE)
VAL_VOLUME_DICE = VOLUME_DICE.of(Split.VAL)
TEST_VOLUME_DICE = VOLUME_DICE.of(Split.TEST)
