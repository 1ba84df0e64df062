"""Where models logged before the stages package find their predictor: every logged model runs
its own copy of the pyfunc file (``covidseg/tracking/pyfunc_model.py`` or ``mlflow_model.py`` as
it was then), and those copies import ``covidseg.predict.Predictor`` — when covidseg is already
imported in the process, this package's (MLflow puts the model's code path first on ``sys.path``
but does not re-import a loaded package)."""

from covidseg.stages.predict import Predictor

__all__ = ["Predictor"]
