"""Inference: a trained network applied to whole volumes and to new CT files.

==============  ================================================================================
``volume``      whole-volume inference — the slices of a volume through a 2D network in batches
                (or a 3D network at its coarse size): what validation, ``evaluate`` and
                ``predict`` all run
``predictor``   :class:`~covidseg.inference.predictor.Predictor`: a loaded model and the
                preprocessing it was trained with; one input read, preprocessed, predicted, and
                its masks and report written on the input's own grid
``export``      the network's output back on the input's grid (crop, resampling and orientation
                undone) and into files (NIfTI / PNG masks, probability maps)
``report``      a case's lung and lesion volumes, % of lung involved, severity class
``inputs``      what ``input=`` and ``lungs=`` name: the files to predict, their lung masks
``pipelined``   many inputs at once: reading, the network and writing in three stages
``viewer``      a case as one self-contained HTML page (the slice viewer)
==============  ================================================================================

The package sits just above the models (below tracking and training, which run
:func:`predict_volume` in their validation); it knows nothing of MLflow or of the entry points'
parameters.  The entry points (``covidseg.stages.predict``) open a model folder — its
preprocessing is stored as the ``preprocess`` parameters, which the stages decode — and decide
what MLflow receives.  ``from covidseg.inference import predict_volume`` (the address from before
this was a package) still works.
"""

from covidseg.inference.volume import (
    is_3d,
    lesion_probabilities,
    output_classes,
    predict_volume,
    stride_of,
    to_coarse,
)

__all__ = ["is_3d", "lesion_probabilities", "output_classes", "predict_volume", "stride_of",
           "to_coarse"]
