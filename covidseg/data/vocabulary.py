"""The allowed values of the data layer's settings, declared once: each a ``str`` enum whose
members compare equal to (and hash, format and join as) their value, so plain strings from the
command line or a stored ``dataset.json`` work with them unchanged.  :mod:`covidseg.config` takes
its ``choices=`` from here (``Layout.values()``), in this order (the order its help shows).

This module imports nothing heavy: the command line reads it before any run starts.
"""

from __future__ import annotations

from enum import Enum


class Vocabulary(str, Enum):
    """A closed set of names (``enum.StrEnum`` from Python 3.11 on; this also runs on 3.10)."""

    def __str__(self) -> str:  # the value, as StrEnum does
        return self.value

    @classmethod
    def values(cls) -> tuple[str, ...]:
        """The plain values, in declaration order."""
        return tuple(m.value for m in cls)


class Layout(Vocabulary):
    """A data folder's layout adapter (:data:`covidseg.data.layouts.ADAPTERS`); ``auto`` (detect
    it) is not one."""

    COVID19_CT_SEG = "covid19-ct-seg"
    MOSMED = "mosmed"
    MSD_LUNG = "msd-lung"
    NSCLC = "nsclc"
    NNUNET = "nnunet"
    GLOB = "glob"
    DEMO = "demo"


class Task(Vocabulary):
    """What a case's masks mark: COVID infection (trained and evaluated on) or an auxiliary
    lesion (supervised pretraining)."""

    INFECTION = "infection"
    TUMOUR = "tumour"
    EFFUSION = "effusion"
    NODULE = "nodule"
    OTHER = "other"


class Intensity(Vocabulary):
    """The intensity scheme (:func:`covidseg.data.intensity.choose_intensity_mode`)."""

    AUTO = "auto"
    HU = "hu"
    DISPLAY = "display"
    IMAGE = "image"


class LungMethod(Vocabulary):
    """Lung extraction (:func:`covidseg.data.steps.choose_lung_method`)."""

    AUTO = "auto"
    LUNGMASK = "lungmask"
    CLASSICAL = "classical"
    PROVIDED = "provided"
    NONE = "none"


class LungmaskModel(Vocabulary):
    """lungmask models whose cached weights :func:`covidseg.data.lungs.find_lungmask_weights`
    looks for."""

    R231 = "R231"
    R231_COVID_WEB = "R231CovidWeb"
    LTRC_LOBES = "LTRCLobes"


class SliceFit(Vocabulary):
    """How a 2D slice is fitted to ``image_size`` (:func:`covidseg.data.geometry.resize_slices`)."""

    RESIZE = "resize"
    PAD = "pad"


class Labels(Vocabulary):
    """What an infection mask holds: 0/1, or 0 background, 1 ground-glass, 2 consolidation."""

    BINARY = "binary"
    MULTICLASS = "multiclass"


class StoreDtype(Vocabulary):
    """The dtype preprocessed images are stored in."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"


class Regime(Vocabulary):
    """Which part of the folds trains (:func:`covidseg.data.splits.fold_split`): standard (k-1
    folds, alias 40-10) or inverse (one fold, alias 10-40)."""

    STANDARD = "standard"
    INVERSE = "inverse"
    FORTY_TEN = "40-10"
    TEN_FORTY = "10-40"
