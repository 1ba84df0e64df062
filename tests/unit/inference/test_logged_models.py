"""Models logged before today's layout load with today's covidseg: each logged model carries its
own copy of the pyfunc file, which MLflow executes by its path in the model folder.  The copies
in ``logged_pyfunc/`` are the file as it was at two commits — 727916e (``covidseg/tracking/``,
importing ``covidseg.predict.Predictor``) and 6a3b408 (importing
``covidseg.stages.predict.Predictor``), kept as snapshots (not ``.py``: no linter or refactor
touches them) — saved here as MLflow saves them, without a code path, so they import the covidseg
of this process (as they do when it is already imported)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from covidseg.config import PreprocessConfig
from covidseg.models.checkpoint import save_model
from covidseg.models.factory import ModelSpec, build_model
from covidseg.stages.predict import Predictor

COPIES = sorted((Path(__file__).parent / "logged_pyfunc").glob("pyfunc_model_*.snapshot"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    spec = ModelSpec("unet", "resnet18")
    return save_model(tmp_path_factory.mktemp("model"), build_model(spec), spec,
                      {"preprocess": PreprocessConfig(image_size=56).to_params(),
                       "task": "segmentation", "threshold": 0.45})


@pytest.mark.parametrize("copy", COPIES, ids=lambda p: p.stem)
def test_an_old_pyfunc_copy_predicts_as_todays_predictor(copy, model_dir, phantom_files,
                                                         tmp_path):
    import mlflow

    from covidseg.tracking.logged_model import model_signature

    assert len(COPIES) == 2
    code = tmp_path / "pyfunc_model.py"  # MLflow loads a model's code from a .py file
    code.write_text(copy.read_text(encoding="utf-8"), encoding="utf-8")
    mlflow.pyfunc.save_model(tmp_path / "logged", python_model=str(code),
                             artifacts={"weights": str(model_dir)},
                             signature=model_signature(model_dir), pip_requirements=[])
    logged = mlflow.pyfunc.load_model(str(tmp_path / "logged"))
    today = Predictor.from_dir(model_dir)
    slices = np.random.default_rng(0).standard_normal((2, 48, 40)).astype(np.float32)
    expected = (today.predict_slices(slices) > 0.3).astype(np.uint8)
    assert np.array_equal(logged.predict(slices, params={"threshold": 0.3}), expected)
    path = str(phantom_files[1][0]["image"])
    row = logged.predict(pd.DataFrame({"path": [path], "output": [str(tmp_path / "old")]}))
    assert row.to_dict("records") == [today.predict_file(path, tmp_path / "new")]
