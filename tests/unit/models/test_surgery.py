"""Transfer strategies by the encoder's resolution levels (issue 15)."""

import copy

import pytest
import torch
import torch.nn.functional as F

from covidseg.base.errors import ConfigError
from covidseg.models.factory import ModelSpec, build_model
from covidseg.models.levels import encoder_levels
from covidseg.models.surgery import apply_strategy

RESNET_HALF = ["encoder.conv1", "encoder.bn1", "encoder.layer1", "encoder.layer2"]
# what smp's encoders return at strides 2, 4, 8, 16, 32: the first three levels of each
HALF = {
    "resnet18": RESNET_HALF,
    "resnet34": RESNET_HALF,
    "resnet50": RESNET_HALF,
    # torchvision MobileNetV2: features[0:2] stride 2, [2:4] stride 4, [4:7] stride 8
    "mobilenet_v2": [f"encoder.features.{i}" for i in range(7)],
    # EfficientNet-B0: stem stride 2, blocks 0-2 stride 4 (block 1 reduces), blocks 3-4 stride 8
    "efficientnet-b0": ["encoder._conv_stem", "encoder._bn0"]
    + [f"encoder._blocks.{i}" for i in range(5)],
    # timm's features_only model returns all maps at once: each level is still the block that
    # made it
    "tu-efficientnet_b0": ["encoder.model.conv_stem", "encoder.model.bn1"]
    + [f"encoder.model.blocks.{i}" for i in range(3)],
}


def _step(model, size=64):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    x = torch.randn(4, 1, size, size)
    loss = F.binary_cross_entropy_with_logits(model(x), (x > 0).float())
    opt.zero_grad()
    loss.backward()
    opt.step()


def _owned(model, names):
    """state-dict keys under the given module names"""
    return [k for k in model.state_dict() if any(k.startswith(n + ".") for n in names)]


@pytest.mark.parametrize("encoder", sorted(HALF))
def test_half_freezes_the_first_half_of_the_resolution_levels(encoder):
    model = build_model(ModelSpec("unet", encoder))
    report = apply_strategy(model, "freeze-encoder-half")
    assert report["encoder_levels"] == 5 and report["frozen_levels"] == 3  # ⌈5/2⌉
    assert report["frozen"] == HALF[encoder]
    assert [lv["frozen"] for lv in report["levels"]] == [True, True, True, False, False]
    frozen_keys = _owned(model, HALF[encoder])
    params = dict(model.named_parameters())
    frozen_params = sum(params[k].numel() for k in frozen_keys if k in params)
    enc_params = sum(p.numel() for p in model.encoder.parameters())
    assert report["frozen_encoder_fraction"] == pytest.approx(frozen_params / enc_params, abs=1e-6)
    assert all(not params[k].requires_grad for k in frozen_keys if k in params)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == \
        report["trainable_parameters"] == report["total_parameters"] - frozen_params

    before = copy.deepcopy(model.state_dict())
    _step(model)  # model.train() inside: frozen norm layers must stay in eval mode
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in frozen_keys)  # weights and BN statistics
    free = [k for k in after if k.startswith("encoder.") and k not in frozen_keys
            and k.endswith("running_mean")]
    assert any(not torch.equal(before[k], after[k]) for k in free)  # the rest trains


def test_levels_of_a_resnet_are_stem_and_four_layers():
    levels = encoder_levels(build_model(ModelSpec("unet", "resnet34")))
    names = [sorted({n.split(".")[1] for n in lv["modules"]}) for lv in levels]
    assert names == [["bn1", "conv1"], ["layer1"], ["layer2"], ["layer3"], ["layer4"]]


@pytest.mark.parametrize("arch", ["unet", "attention-unet"])
def test_decoder_strategy_freezes_encoder_weights_and_bn_statistics(arch):
    model = build_model(ModelSpec(arch, "resnet18"))
    report = apply_strategy(model, "decoder")
    assert report["frozen"] == ["encoder"] and report["frozen_encoder_fraction"] == 1.0
    before = copy.deepcopy(model.state_dict())
    _step(model)
    after = model.state_dict()
    enc = [k for k in before if k.startswith("encoder.")]
    assert enc and all(torch.equal(before[k], after[k]) for k in enc)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))


@pytest.mark.parametrize("arch,block", [("unet", "decoder.blocks.4"),
                                        ("attention-unet", "decoder.blocks.4"),
                                        ("genesis-unet", "decoder.up_tr64"),
                                        # a flat decoder (aspp, conv, bn, relu): its last conv on
                                        ("deeplabv3", ("decoder.conv", "decoder.bn"))])
def test_all_reinitialises_the_last_decoder_block_and_the_head(arch, block):
    block = (block,) if isinstance(block, str) else block
    source = build_model(ModelSpec(arch, "resnet18"))
    with torch.no_grad():  # make every weight recognisable, so a re-initialisation shows
        for p in source.parameters():
            p.fill_(0.123)
    model = copy.deepcopy(source)
    report = apply_strategy(model, "all")
    assert report["trainable_parameters"] == report["total_parameters"]
    old, new = source.state_dict(), model.state_dict()
    weights = [k for k in new if k.endswith("weight")]
    changed = {k for k in weights if not torch.equal(old[k], new[k])}
    expected = {k for k in weights if k.startswith(tuple(b + "." for b in block))
                or k.startswith("segmentation_head.")}
    assert changed == expected and expected
    assert all(r.startswith((*block, "segmentation_head")) for r in report["reinitialised"])


def test_decoder_strategy_needs_no_levels_and_half_says_when_there_are_none():
    """SegFormer's MiT reshapes its maps outside any module: the whole encoder still freezes,
    half of it cannot be told and says so in one line."""
    model = build_model(ModelSpec("segformer", "mit_b0"))
    assert apply_strategy(copy.deepcopy(model), "decoder")["frozen"] == ["encoder"]
    with pytest.raises(ConfigError, match="cannot tell the encoder's resolution levels"):
        apply_strategy(model, "freeze-encoder-half")


def test_unknown_strategy():
    with pytest.raises(ConfigError, match="strategy='some' is not one of"):
        apply_strategy(build_model(ModelSpec("unet", "resnet18")), "some")


def test_a_scratch_network_is_not_reinitialised():
    model = build_model(ModelSpec("unet", "resnet18"))
    before = copy.deepcopy(model.state_dict())
    report = apply_strategy(model, "all", pretrained=False)
    assert report["reinitialised"] == []
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
