"""The file MLflow executes to load a logged covidseg model ("models from code"; nothing is
pickled): the MLflow model class (:class:`covidseg.tracking.pyfunc.CovidsegSegmenter`, what
``predict`` accepts and how a bad input is answered) with the entry points' predictor
(:class:`covidseg.stages.predict.Predictor`), which opens the logged model folder.

MLflow copies this file into every logged model (recording its file name, ``pyfunc_model.py``)
and executes that copy, by its path in the model folder, when it loads one; covidseg travels with
the model as code.  So where this file lives in the package concerns new models only: models
logged while it was ``covidseg/mlflow_model.py`` or ``covidseg/tracking/pyfunc_model.py`` run
their own copies, which import ``covidseg.predict.Predictor`` or
``covidseg.stages.predict.Predictor`` — both kept.  Nothing in covidseg imports this module
(importing it registers the model with ``mlflow.models.set_model``).
"""

from covidseg.tracking.pyfunc import serve


def load_predictor(weights: str):
    """The predictor of the logged model folder ``weights`` (torch loads here, not at import)."""
    from covidseg.stages.predict import Predictor

    return Predictor.from_dir(weights)


serve(load_predictor)
