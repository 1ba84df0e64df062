"""Models Genesis 3D → 2D: a checkpoint in the released UNet3D layout, built here, flattens into
the 2D twin; every tensor is consumed or deliberately skipped; the flattening rules hold."""

import pytest
import torch
import torch.nn.functional as F

from covidseg.base.errors import ConfigError
from covidseg.models.factory import ModelSpec, build_model
from covidseg.models.genesis import flatten_genesis_3d, read_checkpoint_state
from covidseg.models.surgery import apply_strategy
from tests.helpers import write_genesis_checkpoint


@pytest.fixture(scope="module")
def genesis_file(tmp_path_factory):
    return write_genesis_checkpoint(tmp_path_factory.mktemp("genesis") / "Genesis_Chest_CT.pt")


def test_every_tensor_is_consumed_or_skipped_with_a_reason(genesis_file):
    path, state = genesis_file
    loaded = read_checkpoint_state(path)
    assert set(loaded) == set(state)
    model = build_model(ModelSpec("genesis-unet"))
    report = flatten_genesis_3d(loaded, model)
    assert set(report["consumed"]) | set(report["skipped"]) == set(state)
    assert not set(report["consumed"]) & set(report["skipped"])
    assert report["missing"] == []
    # only the batch-norm running statistics are skipped, each with its reason
    assert all(k.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")
               for k in report["skipped"])
    assert all("batch statistics" in why for why in report["skipped"].values())
    n_convs = sum(1 for k in state if k.endswith("conv1.weight"))
    assert n_convs == 14 and len(report["consumed"]) == 14 * 4 + 3 * 2 + 2
    sd = model.state_dict()
    assert sd["encoder.down_tr64.ops.0.conv1.weight"].shape == (32, 1, 3, 3)
    assert sd["encoder.down_tr512.ops.1.conv1.weight"].shape == (512, 256, 3, 3)
    assert sd["decoder.up_tr256.up_conv.weight"].shape == (512, 512, 2, 2)
    assert sd["decoder.up_tr256.ops.0.conv1.weight"].shape == (256, 768, 3, 3)
    assert sd["segmentation_head.weight"].shape == (1, 64, 1, 1)
    # norm affine copied; running statistics left fresh (0/1) by flattening: a freezing strategy
    # re-estimates them on the target's slices (tested below)
    assert torch.equal(sd["encoder.down_tr64.ops.0.bn1.weight"],
                       state["module.down_tr64.ops.0.bn1.weight"])
    assert torch.equal(sd["encoder.down_tr64.ops.0.bn1.running_mean"], torch.zeros(32))


def test_flattened_kernels_answer_a_slice_like_3d_answers_a_constant_volume(genesis_file):
    _, state = genesis_file
    model = build_model(ModelSpec("genesis-unet"))
    flatten_genesis_3d(state, model)
    x2 = torch.randn(1, 1, 16, 16)
    x3 = x2[..., None].expand(1, 1, 16, 16, 6).contiguous()  # constant along the last (slice) axis
    w3 = state["module.down_tr64.ops.0.conv1.weight"]
    b3 = state["module.down_tr64.ops.0.conv1.bias"]
    conv = model.encoder.down_tr64.ops[0].conv1
    y3 = F.conv3d(x3, w3, b3, padding=1)[..., 3]  # an interior slice
    assert torch.allclose(conv(x2), y3, atol=1e-4)
    # transposed convolution: each output slice of the 3D layer uses one kernel slice
    up3 = state["module.up_tr64.up_conv.weight"]
    up = model.decoder.up_tr64.up_conv
    f2 = torch.randn(1, 128, 4, 4)
    f3 = f2[..., None].expand(1, 128, 4, 4, 3).contiguous()
    y = F.conv_transpose3d(f3, up3, state["module.up_tr64.up_conv.bias"], stride=2)
    assert torch.allclose(up(f2), y.mean(dim=-1), atol=1e-4)


def test_genesis_half_freeze_reestimates_and_keeps_norm_statistics(genesis_file):
    """The released model has no usable running statistics (flattening leaves them fresh, 0/1):
    frozen norm layers get statistics re-estimated on the target's slices, then keep them."""
    _, state = genesis_file
    model = build_model(ModelSpec("genesis-unet"))
    flatten_genesis_3d(state, model)
    head_before = model.segmentation_head.weight.detach().clone()
    g = torch.Generator().manual_seed(1)
    slices = [torch.randn(4, 1, 32, 32, generator=g) * 2 + 0.5 for _ in range(3)]
    report = apply_strategy(model, "freeze-encoder-half", calibration=lambda: iter(slices))
    assert report["frozen"] == ["encoder.down_tr64", "encoder.down_tr128"]  # ⌈4/2⌉ of 4 levels
    assert "re-estimated on 12 training slices" in report["norm_statistics"]
    assert not torch.equal(head_before, model.segmentation_head.weight)  # re-initialised
    first = model.encoder.down_tr64.ops[0]
    with torch.no_grad():  # the first norm layer sees conv1's output: its exact mean and variance
        feats = torch.cat([first.conv1(x) for x in slices])
    assert torch.allclose(first.bn1.running_mean, feats.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(first.bn1.running_var, feats.var(dim=(0, 2, 3)), rtol=1e-3)
    frozen_keys = [k for k in model.state_dict() if k.startswith(("encoder.down_tr64.",
                                                                 "encoder.down_tr128."))]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for k in frozen_keys:
        if k.endswith("running_mean"):
            assert before[k].abs().max() > 0.01  # not the fresh 0
        if k.endswith("running_var"):
            assert (before[k] - 1).abs().max() > 0.01  # not the fresh 1
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    x = torch.randn(2, 1, 32, 32)
    loss = F.binary_cross_entropy_with_logits(model(x), (x > 0).float())
    loss.backward()
    opt.step()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in frozen_keys)
    assert not torch.equal(before["encoder.down_tr512.ops.0.bn1.running_mean"],
                           after["encoder.down_tr512.ops.0.bn1.running_mean"])  # not frozen
    assert model(x).shape == (2, 1, 32, 32)


def test_non_genesis_state_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(ConfigError, match="not a Models Genesis"):
        flatten_genesis_3d(read_checkpoint_state(path), build_model(ModelSpec("genesis-unet")))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot load checkpoint"):
        read_checkpoint_state(tmp_path / "junk.pt")
