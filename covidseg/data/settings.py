"""What the data layer is told: small frozen settings objects, one per concern, instead of an entry
point's configuration.  The parameters themselves are declared once, in :mod:`covidseg.config`
(CLI, MLproject, Optuna); the stage that runs the data layer builds these from them
(:func:`covidseg.stages.preprocess.preprocess_settings` and its siblings).  What
:class:`~covidseg.data.inputs.InputSettings` says (where the cases come from) sits next to its one
user, :mod:`covidseg.data.inputs`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PreprocessSettings:
    """How each case is preprocessed and stored (the steps of :mod:`covidseg.data.steps`): what a
    dataset is keyed by and what ``predict`` repeats on a new volume."""

    intensity: str  # an Intensity
    window: tuple[float, float]  # the lung window (HU) of the hu scheme
    hist_eq: bool  # histogram equalisation inside the lungs before the z-score
    lung_method: str  # a LungMethod
    lung_weights: str  # a local lungmask weight file ('': look in lungmask's cache)
    lung_model: str  # a LungmaskModel: whose cached weights that looks for
    image_size: int  # in-plane size (0: the 1 mm grid as is)
    slice_fit: str  # a SliceFit: how 2D slices meet image_size
    min_size: int  # refuse images smaller than this in-plane (pixels)
    max_field_of_view_mm: float  # refuse wider volumes (a wrong spacing)
    max_voxels: float  # refuse volumes with more voxels on the 1 mm grid (0: no cap)
    labels: str  # a Labels: binary or multiclass infection masks
    store_dtype: str  # a StoreDtype


@dataclass(frozen=True)
class SplitSettings:
    """The held-out test set and the cross-validation folds
    (:func:`~covidseg.data.splits.make_splits`)."""

    test_cases: int
    folds: int
    seed: int
