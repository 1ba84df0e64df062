"""What goes with a logged covidseg model besides its weights: the code MLflow runs to load it
(``covidseg/serving/pyfunc_model.py``, with the whole ``covidseg`` package as its code path), the
pinned requirements, and the signature that declares its inference parameters."""

from __future__ import annotations

from pathlib import Path

# the covidseg package: it travels with every logged model as code
PACKAGE = Path(__file__).resolve().parents[1]
# the "models from code" file MLflow copies into the model and executes to load it (a path, not an
# import: it sits in the layer above, covidseg/serving/)
MODEL_CODE = PACKAGE / "serving" / "pyfunc_model.py"

# what the logged model needs to predict, pinned to this machine's versions (covidseg itself
# travels with the model as code)
MODEL_PACKAGES = ("torch", "segmentation-models-pytorch", "SimpleITK", "numpy", "scipy", "pandas",
                  "mlflow", "lungmask", "tqdm", "PyYAML", "highdicom")  # highdicom: DICOM SEG


def model_requirements() -> list[str]:
    """``MODEL_PACKAGES`` pinned to the installed versions (unpinned where one is missing)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist in MODEL_PACKAGES:
        try:
            out.append(f"{dist}=={version(dist).split('+')[0]}")
        except PackageNotFoundError:
            out.append(dist)
    return out


def model_signature(model_dir):
    """The logged model's signature: its inference parameters with their defaults — the decision
    threshold stored with the model and ``restrict_to_lungs`` — so that ``predict(...,
    params={"threshold": p})`` reaches the model (MLflow drops params a model does not declare).
    Inputs are arrays of any shape or a DataFrame of paths: no input schema."""
    import json

    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec

    config = json.loads((Path(model_dir) / "model.json").read_text())
    return ModelSignature(inputs=None, outputs=None, params=ParamSchema([
        ParamSpec("threshold", "double", float(config.get("threshold") or 0.5)),
        ParamSpec("restrict_to_lungs", "boolean", True)]))
