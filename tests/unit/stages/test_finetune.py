"""pretrain (both modes) and finetune's three kinds of init, in-process without a server."""


import pytest

from covidseg.base.errors import ConfigError
from covidseg.config import FinetuneConfig, PreprocessConfig
from covidseg.stages.finetune import finetune
from covidseg.stages.preprocess import preprocess_dataset
from tests.conftest import TINY_DEMO

FAST = dict(encoder="resnet18", batch_size=8, workers=0, iterations_per_epoch=6, warmup=0)


@pytest.fixture(scope="module")
def tiny_path():
    return preprocess_dataset(PreprocessConfig(**TINY_DEMO), progress=False)["dataset_path"]


def test_finetune_refuses_impossible_folds(tiny_path):
    with pytest.raises(ConfigError, match="train_cases=9"):
        finetune(FinetuneConfig(data=tiny_path, train_cases=9, epochs=1, **FAST), progress=False)
    with pytest.raises(ConfigError, match="fold=5 is out of range"):
        finetune(FinetuneConfig(data=tiny_path, fold=5, epochs=1, **FAST), progress=False)
