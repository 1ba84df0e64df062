"""What a dataset decides: the training plan, derived once from its fingerprint (nnU-Net's
"plans"), written as ``plan.json`` on the run, and overridden by any parameter given.

A user who gives covidseg only ``data=`` gets settings fitted to that data:

* **kind** — ``2d-slices`` (every case a single slice image: PNG/JPG exports, one-slice NIfTI) or
  ``volumes``;
* **image_size** (2D slice sets only, decided *before* preprocessing from the raw images): the
  median longer side of the labelled slices, to the nearest multiple of 32, within [64, 512] —
  the side every slice is resized to.  nnU-Net takes the median shape as its patch size for the
  same reason: most slices keep their resolution, none is blown up far;
* **iterations_per_epoch** — :data:`ITERATIONS_PER_EPOCH` optimiser steps between validations,
  whatever the number of labelled slices (40 slices in batches of 8 would be 5 steps an epoch);
* **epochs** — enough epochs for :func:`total_iterations` steps: at least
  :data:`MIN_ITERATIONS`, otherwise :data:`PASSES` passes over the training slices (lesion-free
  slices of volumes count: they are drawn as often), at most :data:`MAX_ITERATIONS`; a
  semi-supervised run (meanteacher) also makes at least :data:`UNLABELLED_PASSES` passes over
  its unlabelled slices (one unlabelled batch a step: SSL4MIS runs 30,000 iterations, UniMatch
  80 epochs over its unlabelled set).

With ``recipe=thesis`` an epoch is one pass over the training slices and the thesis's 500 epochs
stand (early stop after 30).  Any of these given as a parameter (``epochs``,
``iterations_per_epoch``, ``image_size`` of preprocess) wins over the plan, and ``plan.json``
records both what the plan said and what ran.

The numbers follow nnU-Net's 2D plans scaled to small label sets; they are measured on real CT
slices in docs/benchmarks.md, "The training recipe on real CT"; see :func:`total_iterations`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

ITERATIONS_PER_EPOCH = 50
MIN_ITERATIONS = 1000
MAX_ITERATIONS = 20000
PASSES = 60
UNLABELLED_PASSES = 20
EPOCHS_3D = 100
SLICE_SIZE_RANGE = (64, 512)


@dataclass(frozen=True)
class PlanRequest:
    """What a run asks of its plan: its ``batch_size`` (per process), ``recipe`` (``covidseg``
    or ``thesis``), and the ``epochs`` and ``iterations_per_epoch`` given as parameters (0: the
    plan's)."""

    batch_size: int = 8
    recipe: str = "covidseg"
    epochs: int = 0
    iterations_per_epoch: int = 0


@dataclass
class Plan:
    """The settings a dataset's fingerprint decided (and, in ``given``, those a parameter
    overrode)."""

    kind: str
    recipe: str
    training_cases: int
    training_slices: int
    median_slice_shape: list
    batch_size: int
    iterations_per_epoch: int
    epochs: int
    total_iterations: int
    image_size: int = 0
    unlabelled_slices: int = 0
    given: dict = field(default_factory=dict)
    why: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def slice_size_for(shapes) -> int:
    """The side 2D slices are resized to: the median longer side of ``shapes`` ((h, w) pairs),
    to the nearest multiple of 32, within :data:`SLICE_SIZE_RANGE`."""
    longer = [max(int(h), int(w)) for h, w in shapes]
    if not longer:
        return 256
    side = int(round(float(np.median(longer)) / 32.0)) * 32
    return int(min(max(side, SLICE_SIZE_RANGE[0]), SLICE_SIZE_RANGE[1]))


def total_iterations(training_slices: int, batch_size: int, unlabelled_slices: int = 0) -> int:
    """Optimiser steps of a run: :data:`PASSES` passes over the training slices (and
    :data:`UNLABELLED_PASSES` over ``unlabelled_slices``, if more), at least
    :data:`MIN_ITERATIONS` and at most :data:`MAX_ITERATIONS`."""
    batch = max(1, batch_size)
    passes = max(math.ceil(PASSES * training_slices / batch),
                 math.ceil(UNLABELLED_PASSES * unlabelled_slices / batch))
    return int(min(max(passes, MIN_ITERATIONS), MAX_ITERATIONS))


def is_slice_dataset(ds) -> bool:
    """Every case of ``ds`` a single 2D slice image."""
    return bool(ds.cases) and all(m.get("slice_image") for m in ds.cases.values())


def make_plan(ds, train_ids, request: PlanRequest, three_d: bool = False,
              unlabelled_slices: int = 0) -> Plan:
    """The plan of a training run on ``train_ids`` of ``ds`` (a finetune or meanteacher run):
    what the fingerprint decides, and what ``request`` sets instead.
    ``three_d``: the network is the coarse 3D U-Net (one volume per step: an epoch is one pass
    over the volumes, :data:`EPOCHS_3D` of them); ``unlabelled_slices``: a semi-supervised run's
    unlabelled slices (one batch of them a step)."""
    kind = "2d-slices" if is_slice_dataset(ds) else "volumes"
    shapes = [ds.cases[c]["shape"] for c in train_ids]
    slices = int(sum(s[0] for s in shapes))
    median = [int(np.median([s[1] for s in shapes])), int(np.median([s[2] for s in shapes]))]
    from covidseg.train.distributed import world

    batch = int(request.batch_size) * world().size  # the global batch: all processes' passes
    recipe = request.recipe
    why = {}
    if three_d:
        per_epoch, epochs = 0, EPOCHS_3D
        slices = len(train_ids)  # one volume per step
        why["iterations_per_epoch"] = "the coarse 3D U-Net: one pass over the volumes"
        why["epochs"] = f"{EPOCHS_3D} passes (recipe={recipe})"
    elif recipe == "thesis":
        per_epoch = 0  # one pass: the loader's length
        epochs = 500
        why["iterations_per_epoch"] = "recipe=thesis: one pass over the training slices"
        why["epochs"] = "recipe=thesis: 500 epochs, early stop after 30 without improvement"
    else:
        per_epoch = ITERATIONS_PER_EPOCH
        total = total_iterations(slices, batch, unlabelled_slices)
        epochs = max(1, math.ceil(total / per_epoch))
        why["iterations_per_epoch"] = f"a validation every {ITERATIONS_PER_EPOCH} steps"
        why["epochs"] = (f"{PASSES} passes over {slices} training slices in batches of {batch}"
                         + (f" or {UNLABELLED_PASSES} over {unlabelled_slices} unlabelled slices, "
                            "whichever is more" if unlabelled_slices else "")
                         + f", at least {MIN_ITERATIONS} and at most {MAX_ITERATIONS} steps")
    given = {}
    if request.iterations_per_epoch:
        given["iterations_per_epoch"] = int(request.iterations_per_epoch)
    if request.epochs:
        given["epochs"] = int(request.epochs)
    per_epoch_run = (given.get("iterations_per_epoch", per_epoch)
                     or max(1, slices // (1 if three_d else batch)))
    epochs_run = given.get("epochs", epochs)
    size = int(ds.descriptor.get("config", {}).get("image_size", 0) or 0)
    return Plan(kind=kind, recipe=recipe, training_cases=len(train_ids), training_slices=slices,
                unlabelled_slices=int(unlabelled_slices),
                median_slice_shape=median, batch_size=batch, iterations_per_epoch=per_epoch,
                epochs=epochs, total_iterations=per_epoch_run * epochs_run,
                image_size=size if kind == "2d-slices" else 0, given=given, why=why)


def planned(plan: Plan, name: str) -> int:
    """What runs for ``name`` (``epochs``, ``iterations_per_epoch``): the parameter given, else
    the plan's (``iterations_per_epoch`` 0: one pass over the training slices)."""
    return int(plan.given.get(name, getattr(plan, name)))
