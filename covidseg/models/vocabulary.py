"""The allowed values of the models layer's settings, declared once (``str`` enums, see
:mod:`covidseg.data.vocabulary`); :mod:`covidseg.config` takes its choices from here.  Nothing
heavy is imported (``covidseg.models`` loads its factory lazily): the command line reads it
before any run starts."""

from __future__ import annotations

from covidseg.data.vocabulary import Vocabulary


class Strategy(Vocabulary):
    """Which weights of an initialised network train (:mod:`covidseg.models.surgery`)."""

    ALL = "all"
    DECODER = "decoder"
    FREEZE_ENCODER_HALF = "freeze-encoder-half"


class Arch(Vocabulary):
    """covidseg's own architectures (:data:`covidseg.models.factory.ARCHITECTURES`); ``arch=``
    also takes every segmentation-models-pytorch name."""

    ATTENTION_UNET = "attention-unet"
    UNET3D = "unet3d"
    GENESIS_UNET = "genesis-unet"
