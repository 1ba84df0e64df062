import copy

import pytest
import torch

from covidseg.errors import ConfigError
from covidseg.models.factory import ModelSpec, build_model
from covidseg.models.surgery import apply_strategy, encoder_stages


def _step(model):
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x = torch.randn(4, 1, 64, 64)
    loss = (model(x) - (x > 0).float()).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def _changed(before, after, prefix):
    return {k: not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix)}


@pytest.mark.parametrize("arch", ["unet", "attention-unet"])
def test_decoder_strategy_freezes_encoder_weights_and_bn_statistics(arch):
    model = build_model(ModelSpec(arch, "resnet18"))
    apply_strategy(model, "decoder")
    before = copy.deepcopy(model.state_dict())
    _step(model)
    after = model.state_dict()
    enc = _changed(before, after, "encoder.")
    assert enc and not any(enc.values())  # weights and running_mean/var all unchanged
    assert any(_changed(before, after, "decoder.").values())


def test_half_freeze_and_reinitialised_head():
    source = build_model(ModelSpec("unet", "resnet18"))
    model = copy.deepcopy(source)
    report = apply_strategy(model, "freeze-encoder-half")
    head = {k: v for k, v in model.state_dict().items() if k.startswith("segmentation_head.")}
    assert any(not torch.equal(v, source.state_dict()[k]) for k, v in head.items())
    assert report["reinitialised"] and report["trainable_parameters"] < report["total_parameters"]
    stages = encoder_stages(model)
    frozen, free = stages[: len(stages) // 2], stages[len(stages) // 2:]
    snap = [copy.deepcopy(s.state_dict()) for s in stages]
    _step(model)
    for s, old in zip(frozen, snap):
        assert all(torch.equal(v, s.state_dict()[k]) for k, v in old.items())
    assert any(not torch.equal(v, free[-1].state_dict()[k]) for k, v in snap[-1].items())


def test_all_trains_everything_and_unknown_strategy():
    model = build_model(ModelSpec("unet", "resnet18"))
    report = apply_strategy(model, "all")
    assert report["trainable_parameters"] == report["total_parameters"]
    with pytest.raises(ConfigError, match="strategy='some' is not one of"):
        apply_strategy(model, "some")
