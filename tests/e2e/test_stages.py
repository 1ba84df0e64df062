"""pretrain (both modes) and finetune's three kinds of init, in-process without a server."""

from pathlib import Path

import numpy as np
import pytest
import torch

from covidseg.base.errors import ConfigError
from covidseg.config import FinetuneConfig, PretrainConfig
from covidseg.models.checkpoint import load_model
from covidseg.stages.finetune import finetune
from covidseg.stages.pretrain import pretrain
from tests.conftest import TINY_DEMO
from tests.helpers import write_genesis_checkpoint
from tests.unit.stages import test_finetune as unit
from tests.unit.stages.test_finetune import FAST

tiny_path = unit.tiny_path  # the unit tests' fixture, shared


@pytest.mark.e2e  # two whole training stages in a row, evaluated
def test_supervised_pretrain_on_non_covid_then_finetune_from_its_folder(tiny_path):
    out = pretrain(PretrainConfig(data=tiny_path, mode="supervised", epochs=1, **FAST),
                   progress=False)
    assert out["mode"] == "supervised" and "best_val_volume_dice" in out
    model_dir = Path(out["model_dir"])
    _, config = load_model(model_dir)
    assert config["task"] == "supervised" and config["preprocess"]["window_min"] == "-1250.0"
    ft = finetune(FinetuneConfig(data=tiny_path, init=str(model_dir), strategy="decoder", epochs=1,
                                 **FAST), progress=False)
    assert ft.test_volume_dice == pytest.approx(dice_by_hand(tiny_path, ft), abs=1e-4)


def dice_by_hand(dataset_path, result) -> float:
    """The mean volume Dice of the saved model on the held-out test cases, computed here: its
    probabilities mapped to each case's original grid, thresholded at the stored threshold, and
    2|P∩R| / (|P| + |R|) against the mask as shipped."""
    from covidseg.data.geometry import to_canonical_grid
    from covidseg.data.store import PreprocessedDataset
    from covidseg.inference import predict_volume

    model, config = load_model(Path(result.model_uri))
    model.eval()
    ds = PreprocessedDataset(Path(dataset_path))
    dices = []
    for c in ds.splits.test:
        prob = predict_volume(model, np.asarray(ds.load(c)[0]), torch.device("cpu"))
        pred = to_canonical_grid(prob, ds.cases[c]) > config["threshold"]
        ref = ds.load_original(c) > 0
        assert pred.shape == ref.shape and ref.any()
        dices.append(2.0 * np.logical_and(pred, ref).sum() / (pred.sum() + ref.sum()))
    assert len(dices) == TINY_DEMO["test_cases"]
    return float(np.mean(dices))


@pytest.mark.e2e  # a whole finetune stage of the 3D-derived network
def test_finetune_from_a_models_genesis_checkpoint(tiny_path, tmp_path):
    path, state = write_genesis_checkpoint(tmp_path / "Genesis_Chest_CT.pt")
    ft = finetune(FinetuneConfig(data=tiny_path, init=str(path), strategy="freeze-encoder-half",
                                 epochs=2, batch_size=4, workers=0, iterations_per_epoch=6,
                                 warmup=0), progress=False)
    model, config = load_model(Path(ft.model_uri))
    assert config["model"]["arch"] == "genesis-unet"
    # the frozen half kept the released weights and got statistics of the target's slices
    sd = model.state_dict()
    assert torch.equal(sd["encoder.down_tr128.ops.1.conv1.weight"],
                       state["module.down_tr128.ops.1.conv1.weight"].sum(dim=-1))
    for name in ("encoder.down_tr64.ops.0.bn1", "encoder.down_tr128.ops.1.bn1"):
        assert sd[f"{name}.running_mean"].abs().max() > 1e-3
        assert (sd[f"{name}.running_var"] - 1).abs().max() > 1e-3
    with pytest.raises(ConfigError, match="fits arch=genesis-unet"):
        finetune(FinetuneConfig(data=tiny_path, init=str(path), arch="fpn", epochs=1),
                 progress=False)


