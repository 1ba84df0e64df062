"""Model factory (smp architectures, attention U-Net, 3D U-Net) and checkpoints."""

from covidseg.models.factory import ModelSpec, build_model  # noqa: F401
