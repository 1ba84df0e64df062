"""What MLflow starts: ``pyfunc_model.py``, the file a logged covidseg model carries and MLflow
executes to load it ("models from code"); it hands :class:`covidseg.stages.predict.Predictor`
to the MLflow model class (:mod:`covidseg.tracking.pyfunc`).  Nothing in covidseg imports it."""
