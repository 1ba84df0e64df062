"""Every architecture of the factory, held to
:class:`tests.unit.models.contract.ArchitectureContract` in a few lines each (smp's
``tests/models/test_unet.py``); a test below makes sure none is left out."""

from __future__ import annotations

import pytest
from torch import nn

from covidseg.base.errors import ConfigError
from covidseg.models import factory
from covidseg.models.factory import ModelSpec, build_model
from covidseg.models.vocabulary import Arch
from tests.unit.models.contract import ArchitectureContract


class TestUnet(ArchitectureContract):
    spec, shape = ModelSpec("unet", "resnet18"), (2, 1, 64, 64)


class TestFpn(ArchitectureContract):
    spec, shape = ModelSpec("fpn", "resnet18"), (1, 1, 64, 96)


class TestUnetMobilenet(ArchitectureContract):
    spec, shape = ModelSpec("unet", "mobilenet_v2", in_channels=2), (1, 2, 64, 64)


class TestAttentionUnet(ArchitectureContract):
    spec, shape = ModelSpec(Arch.ATTENTION_UNET, "resnet18"), (2, 1, 64, 64)


class TestGenesisUnet(ArchitectureContract):
    spec, shape = ModelSpec(Arch.GENESIS_UNET, "genesis"), (1, 1, 40, 48)


class TestUnet3d(ArchitectureContract):
    spec, shape = ModelSpec(Arch.UNET3D), (1, 1, 6, 32, 32)
    strategies = ("decoder",)  # the others probe a 64 × 128 × 128 volume: seconds on a CPU


class TestEnsemble(ArchitectureContract):
    spec, shape = ModelSpec("unet", "resnet18", members=2), (1, 1, 64, 64)
    strategies, parts = (), ("members",)  # never an init: no strategy applies to it


class TestUnet3dEnsemble(ArchitectureContract):
    spec, shape = ModelSpec(Arch.UNET3D, members=2), (1, 1, 4, 32, 32)
    strategies, parts = (), ("members",)


def test_covidseg_s_own_architectures_are_the_vocabulary_and_each_has_a_contract():
    assert tuple(factory.ARCHITECTURES) == Arch.values()
    tested = {cls.spec.arch for cls in ArchitectureContract.__subclasses__()}
    assert set(Arch.values()) <= tested


def test_every_arch_name_is_one_mapping_and_an_unknown_one_lists_them():
    table = factory.architectures()
    assert {"unet", "fpn", "unetplusplus", *Arch.values()} <= set(table)
    with pytest.raises(ConfigError, match="arch='transunet' is not one of .*attention-unet"):
        build_model(ModelSpec("transunet"))


def test_a_registered_architecture_is_an_arch_name_and_keeps_its_contract(tmp_path):
    """register_architecture makes a new network buildable by name, listed in the error for an
    unknown name, and held to the same contract (a bare module gets the plain traits)."""

    @factory.register_architecture("tiny-test-net", encoder_weights=False)
    def tiny(spec):
        return nn.Conv2d(spec.in_channels, spec.classes, 3, padding=1)

    try:
        contract = type("TestTiny", (ArchitectureContract,),
                        {"spec": ModelSpec("tiny-test-net", ""), "shape": (2, 1, 32, 32),
                         "strategies": ("all",), "parts": ()})()
        contract.test_traits_are_declared_when_built()
        contract.test_output_has_the_input_size_and_a_channel_per_class()
        contract.test_weights_come_back_through_the_checkpoint(tmp_path)
        contract.test_every_strategy_applies_and_the_network_still_runs()
        with pytest.raises(ConfigError, match="tiny-test-net"):
            build_model(ModelSpec("no-such-net"))
    finally:
        del factory.ARCHITECTURES["tiny-test-net"]
