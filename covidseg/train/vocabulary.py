"""The allowed values of the training layer's settings, declared once (``str`` enums, see
:mod:`covidseg.data.vocabulary`); :mod:`covidseg.config` takes its choices from here.  Nothing
heavy is imported: the command line reads it before any run starts."""

from __future__ import annotations

from covidseg.data.vocabulary import Vocabulary


class Loss(Vocabulary):
    """The segmentation loss (:class:`covidseg.train.losses.SegmentationLoss`)."""

    CE = "ce"
    DICE = "dice"
    CE_DICE = "ce+dice"
    HAUSDORFF = "hausdorff"


class DiceMode(Vocabulary):
    """How the Dice term sums: over the whole batch (nnU-Net's batch_dice) or per image."""

    BATCH = "batch"
    SAMPLE = "sample"
