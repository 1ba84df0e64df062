"""The allowed values of the semi-supervised layer's settings, declared once (``str`` enums, see
:mod:`covidseg.data.vocabulary`); :mod:`covidseg.config` takes its choices from here.  Nothing
heavy is imported: the command line reads it before any run starts."""

from __future__ import annotations

from covidseg.data.vocabulary import Vocabulary


class SemiMethod(Vocabulary):
    """How the unlabelled slices teach (:data:`covidseg.semi.teacher.METHODS`)."""

    MEANTEACHER = "meanteacher"
    UNIMATCH = "unimatch"


class PseudoSource(Vocabulary):
    """Where pseudo-labels come from (:mod:`covidseg.stages.pseudolabel`)."""

    MODEL = "model"
    SIMILARITY = "similarity"
    ORACLE = "oracle"
