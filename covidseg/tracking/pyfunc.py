"""The MLflow model of a covidseg network: :class:`CovidsegSegmenter`, a pyfunc ``PythonModel``
that rebuilds the network from the logged ``model.json`` + ``model.pt`` (state dict, loaded with
``weights_only=True``) and predicts with the preprocessing the model was trained with.  MLflow
loads it through ``covidseg/serving/pyfunc_model.py`` ("models from code"), which hands it the
predictor; nothing here imports covidseg's layers above tracking.

``predict`` accepts

* a ``numpy`` array of preprocessed slices ``(H, W)`` or ``(N, H, W)`` → binary masks (uint8),
  the same shape, at the model's decision threshold — ``params={"threshold": p}`` overrides it
  (the signature declares ``threshold``, default the model's, and ``restrict_to_lungs``);
* a ``pandas.DataFrame`` with a ``path`` column (CT volume files or DICOM folders) and optionally
  ``output`` (folder, default ``predictions``) → one report row per input; the infection and lung
  masks are written as NIfTI in each input's original geometry.

A bad input (a missing or unreadable file, no ``path`` column) raises :class:`BadInput`, an
``MlflowException`` with ``INVALID_PARAMETER_VALUE``: ``mlflow models serve`` answers it with HTTP
400 and one line naming the file and the problem, not a traceback.

Load it with ``mlflow.pyfunc.load_model("models:/…")``; covidseg itself travels with the model
(``code_paths``).
"""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

from covidseg.base.errors import CovidsegError


class BadInput(MlflowException):
    """A request the model cannot predict, as one line naming the file and the problem.

    MLflow's scoring server answers an ``MlflowException`` from ``predict`` with its error code's
    HTTP status (``INVALID_PARAMETER_VALUE``: 400) and its JSON, after prefixing the message with
    the whole input DataFrame (several lines); the JSON sent keeps the one line instead."""

    def __init__(self, line: str):
        self.line = " ".join(str(line).split())
        super().__init__(self.line, error_code=INVALID_PARAMETER_VALUE)

    def serialize_as_json(self) -> str:
        return json.dumps({**json.loads(super().serialize_as_json()), "message": self.line})


class CovidsegSegmenter(PythonModel):
    """``load_predictor(folder)``: the predictor of the logged model folder (``weights``)."""

    def __init__(self, load_predictor):
        self.load_predictor = load_predictor

    def load_context(self, context):
        self.predictor = self.load_predictor(context.artifacts["weights"])

    # ``model_input``: a DataFrame of paths or an array (above).  The hint is one MLflow infers no
    # schema from (the logged signature stands) and keeps it from warning, on every model logged,
    # that predict has no type hints (a warning filter cannot: MLflow resets the filters there).
    def predict(self, context, model_input: pd.DataFrame, params=None):
        params = params or {}
        threshold = self.predictor.decision_threshold(params.get("threshold"))
        if isinstance(model_input, pd.DataFrame):
            if "path" not in model_input.columns:
                raise BadInput("the input needs a 'path' column (CT volume files or DICOM "
                               f"folders); got columns {list(map(str, model_input.columns))}")
            rows = []
            for rec in model_input.to_dict("records"):
                try:
                    rows.append(self.predictor.predict_file(
                        rec["path"], rec.get("output") or "predictions", threshold=threshold,
                        restrict_to_lungs=bool(params.get("restrict_to_lungs", True))))
                except CovidsegError as exc:  # one line: the file and the problem
                    raise BadInput(str(exc)) from exc
            return pd.DataFrame(rows)
        arr = np.asarray(model_input, dtype=np.float32)
        squeeze = arr.ndim == 2
        prob = self.predictor.predict_slices(arr[None] if squeeze else arr)
        masks = (prob > threshold).astype(np.uint8)
        return masks[0] if squeeze else masks


def serve(load_predictor) -> None:
    """Register the model MLflow loads from the executing file (``mlflow.models.set_model``)."""
    mlflow.models.set_model(CovidsegSegmenter(load_predictor))
