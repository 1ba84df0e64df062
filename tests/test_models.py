import pytest
import torch

from covidseg.errors import ConfigError
from covidseg.models.checkpoint import load_model, save_model
from covidseg.models.factory import ModelSpec, build_model


@pytest.mark.parametrize("arch,encoder", [("unet", "resnet18"), ("fpn", "resnet18"),
                                          ("attention-unet", "resnet18"),
                                          ("unet", "mobilenet_v2")])
def test_2d_models_shape(arch, encoder):
    model = build_model(ModelSpec(arch, encoder)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 64, 64))
    assert out.shape == (2, 1, 64, 64)
    assert all(hasattr(model, part) for part in ("encoder", "decoder", "segmentation_head"))


def test_attention_gates_weight_the_skips():
    model = build_model(ModelSpec("attention-unet", "resnet18")).eval()
    with torch.no_grad():
        model(torch.randn(1, 1, 64, 64))
    gates = [b.gate for b in model.decoder.blocks if b.gate is not None]
    assert len(gates) == 4
    for g in gates:
        a = g.last_alpha
        assert a.shape[1] == 1 and float(a.min()) >= 0 and float(a.max()) <= 1


def test_unet3d_shape():
    model = build_model(ModelSpec("unet3d")).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 6, 32, 32))
    assert out.shape == (1, 1, 6, 32, 32)


def test_bad_names_are_one_line_errors():
    with pytest.raises(ConfigError, match="arch='transunet' is not one of"):
        build_model(ModelSpec("transunet"))
    with pytest.raises(ConfigError, match="encoder='resnet9000'"):
        build_model(ModelSpec("unet", "resnet9000"))


def test_checkpoint_roundtrip_weights_only(tmp_path):
    spec = ModelSpec("attention-unet", "resnet18")
    model = build_model(spec)
    save_model(tmp_path / "m", model, spec, {"preprocessing": {"intensity": "hu"}})
    back, config = load_model(tmp_path / "m")
    assert config["preprocessing"]["intensity"] == "hu"
    for k, v in model.state_dict().items():
        assert torch.equal(v, back.state_dict()[k])


def test_local_encoder_weights(tmp_path):
    donor = build_model(ModelSpec("unet", "resnet18"))
    weights = {f"module.encoder.{k}": v for k, v in donor.encoder.state_dict().items()}
    torch.save({"state_dict": weights}, tmp_path / "enc.pt")
    model = build_model(ModelSpec("fpn", "resnet18"), encoder_weights=str(tmp_path / "enc.pt"))
    for k, v in donor.encoder.state_dict().items():
        assert torch.equal(v, model.encoder.state_dict()[k])
    with pytest.raises(ConfigError, match="never downloaded"):
        build_model(ModelSpec("unet", "resnet18"), encoder_weights=str(tmp_path / "none.pt"))


def test_an_rgb_encoder_file_adapts_its_first_layer_to_grey_ct(tmp_path):
    """An ImageNet-style state dict (torchvision ResNet keys, conv1 3 input channels) into a
    1-channel encoder: conv1 is not dropped but summed over its RGB kernels — the grey image x
    through the adapted network gives exactly what the RGB network gives for (x, x, x); for 2
    input channels the summed kernel shared (x on both channels = the RGB response)."""
    from covidseg.models.factory import load_encoder_weights

    torch.manual_seed(0)
    rgb = build_model(ModelSpec("unet", "resnet18", in_channels=3)).encoder
    state = {k: v for k, v in rgb.state_dict().items()}  # torchvision names: conv1.weight, …
    assert state["conv1.weight"].shape == (64, 3, 7, 7)
    torch.save(state, tmp_path / "imagenet_resnet18.pt")
    grey = build_model(ModelSpec("unet", "resnet18"))
    report = load_encoder_weights(grey, str(tmp_path / "imagenet_resnet18.pt"))
    assert report["missing"] == [] and report["adapted_input_channels"] == ["conv1.weight"]
    assert torch.equal(grey.encoder.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))
    x = torch.randn(2, 1, 64, 64)
    rgb.eval(), grey.encoder.eval()
    with torch.no_grad():
        want = rgb(x.repeat(1, 3, 1, 1))
        got = grey.encoder(x)
    assert len(want) == len(got) == 6  # the input itself, then the 5 feature maps
    for a, b in zip(want[1:], got[1:]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    two = build_model(ModelSpec("unet", "resnet18", in_channels=2))
    load_encoder_weights(two, str(tmp_path / "imagenet_resnet18.pt"))
    with torch.no_grad():
        got2 = two.encoder.eval()(x.repeat(1, 2, 1, 1))
    torch.testing.assert_close(want[1], got2[1], rtol=1e-4, atol=1e-4)


class ArchitectureContract:
    """What every architecture owes covidseg, checked for one ``spec`` (smp's tests/models/base.py
    in spirit): a subclass sets ``spec`` and ``shape`` (one input, batch first) and inherits the
    checks — the output has the input's spatial size and one channel per class, the network says
    how many classes it predicts, and its weights come back exactly through the checkpoint
    format every stage saves (rebuilt from the spec, weights only)."""

    spec: ModelSpec
    shape: tuple

    def test_output_has_the_input_size_and_a_channel_per_class(self):
        for classes in (1, 3):
            spec = ModelSpec(self.spec.arch, self.spec.encoder, classes=classes)
            model = build_model(spec).eval()
            with torch.no_grad():
                out = model(torch.randn(*self.shape))
            assert out.shape == (self.shape[0], classes, *self.shape[2:])
            assert model.covidseg_classes == classes

    def test_weights_come_back_through_the_checkpoint(self, tmp_path):
        model = build_model(self.spec)
        save_model(tmp_path / "m", model, self.spec, {})
        back, config = load_model(tmp_path / "m")
        assert config["model"]["arch"] == self.spec.arch
        state = back.state_dict()
        assert set(state) == set(model.state_dict())
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


class TestUnet(ArchitectureContract):
    spec, shape = ModelSpec("unet", "resnet18"), (2, 1, 64, 64)


class TestFpn(ArchitectureContract):
    spec, shape = ModelSpec("fpn", "resnet18"), (1, 1, 64, 96)


class TestAttentionUnet(ArchitectureContract):
    spec, shape = ModelSpec("attention-unet", "resnet18"), (2, 1, 64, 64)


class TestGenesisUnet(ArchitectureContract):
    spec, shape = ModelSpec("genesis-unet", "genesis"), (1, 1, 64, 64)


class TestUnet3d(ArchitectureContract):
    spec, shape = ModelSpec("unet3d"), (1, 1, 6, 32, 32)


def test_a_registered_architecture_is_an_arch_name_and_keeps_its_contract(tmp_path):
    """register_architecture makes a new network buildable by name, listed in the error for an
    unknown name, and held to the same contract."""
    from torch import nn

    from covidseg.models import factory

    @factory.register_architecture("tiny-test-net", encoder_weights=False)
    def tiny(spec):
        return nn.Conv2d(spec.in_channels, spec.classes, 3, padding=1)

    try:
        contract = type("TestTiny", (ArchitectureContract,),
                        {"spec": ModelSpec("tiny-test-net", ""), "shape": (2, 1, 32, 32)})()
        contract.test_output_has_the_input_size_and_a_channel_per_class()
        contract.test_weights_come_back_through_the_checkpoint(tmp_path)
        with pytest.raises(ConfigError, match="tiny-test-net"):
            build_model(ModelSpec("no-such-net"))
    finally:
        del factory.ARCHITECTURES["tiny-test-net"]
