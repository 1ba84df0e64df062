"""The extension points are registries, as smp's ``create_model`` maps names to classes: one
mapping each, keyed by the vocabulary enum of the layer that owns it (declared once), and one
one-line error that lists the choices for a name it does not hold."""

from __future__ import annotations

import pytest

from covidseg.base.errors import ConfigError
from covidseg.data.lungs import LUNG_METHODS, lung_method
from covidseg.data.vocabulary import LungMethod
from covidseg.models.factory import ARCHITECTURES, ModelSpec, build_model
from covidseg.models.vocabulary import Arch
from covidseg.semi.pseudoset import SOURCES, pseudo_source
from covidseg.semi.teacher import METHODS
from covidseg.semi.vocabulary import PseudoSource, SemiMethod
from covidseg.train.losses import LOSSES, SegmentationLoss
from covidseg.train.vocabulary import Loss


@pytest.mark.parametrize("registry,vocabulary", [
    (ARCHITECTURES, Arch.values()), (LOSSES, Loss.values()),
    # auto is a choice, not a method: choose_lung_method resolves it first
    (LUNG_METHODS, tuple(v for v in LungMethod.values() if v != LungMethod.AUTO)),
    (SOURCES, PseudoSource.values()), (METHODS, SemiMethod.values())])
def test_each_registry_holds_exactly_its_vocabulary(registry, vocabulary):
    assert tuple(registry) == vocabulary


@pytest.mark.parametrize("look_up,message", [
    (lambda: build_model(ModelSpec("transunet")), "arch='transunet' is not one of .*unet3d"),
    (lambda: SegmentationLoss("focal"),
     "loss='focal' is not one of ce, dice, ce\\+dice, hausdorff"),
    (lambda: lung_method("atlas"), "lung_method='atlas' is not one of lungmask, classical, "
                                   "provided, none$"),
    (lambda: pseudo_source("clip"), "source='clip' is not one of model, similarity, oracle$")])
def test_an_unknown_name_is_one_line_that_lists_the_choices(look_up, message):
    with pytest.raises(ConfigError, match=message) as err:
        look_up()
    assert "\n" not in str(err.value)
