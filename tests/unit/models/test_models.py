"""The factory's encoder weights and errors, the attention gates; what every architecture owes
covidseg is checked in tests/unit/models/ (the architecture contract)."""

import pytest
import torch

from covidseg.base.errors import ConfigError
from covidseg.models.checkpoint import load_model, save_model
from covidseg.models.factory import ModelSpec, build_model


def test_attention_gates_weight_the_skips():
    model = build_model(ModelSpec("attention-unet", "resnet18")).eval()
    with torch.no_grad():
        model(torch.randn(1, 1, 64, 64))
    gates = [b.gate for b in model.decoder.blocks if b.gate is not None]
    assert len(gates) == 4
    for g in gates:
        a = g.last_alpha
        assert a.shape[1] == 1 and float(a.min()) >= 0 and float(a.max()) <= 1


def test_a_bad_encoder_is_a_one_line_error():
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
