"""Model factory (smp architectures, attention U-Net, 3D U-Net) and checkpoints.

``ModelSpec`` and ``build_model`` load the factory (and torch) on first use, so that importing a
light module of this package (:mod:`covidseg.models.vocabulary`) stays light."""


def __getattr__(name: str):
    if name in ("ModelSpec", "build_model"):
        from covidseg.models import factory

        return getattr(factory, name)
    raise AttributeError(f"module 'covidseg.models' has no attribute {name!r}")
