"""Where models logged before the stages package find their predictor: every logged model runs
its own copy of the pyfunc file (``covidseg/tracking/pyfunc_model.py`` as it was then), and
those copies import ``covidseg.predict.Predictor``."""

from covidseg.stages.predict import Predictor

__all__ = ["Predictor"]
