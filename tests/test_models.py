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
