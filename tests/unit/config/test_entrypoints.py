"""Entry points through the three doors (mlflow run, python entrypoints/NAME.py, covidseg NAME)
against a real MLflow server, and the command line's one-line errors."""

import subprocess

import yaml

from covidseg.cli import render_mlproject, render_reference
from covidseg.config import CONFIGS
from covidseg.stages.registry import RUNNERS
from tests.conftest import REPO, subprocess_env


def run(cmd, tmp_path, **env):
    return subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(**env), capture_output=True,
                          encoding="utf-8", errors="replace", timeout=600)


def test_the_parameter_reference_is_rendered_from_the_configs():
    text = (REPO / "docs" / "reference.md").read_text(encoding="utf-8")
    assert text == render_reference(), \
        "docs/reference.md is stale: run `covidseg reference > docs/reference.md`"
    for name, cls in CONFIGS.items():
        assert f"\n## {name}\n" in text
        for f in cls.__dataclass_fields__:
            assert f"| `{f}` |" in text, (name, f)


def test_mlproject_is_rendered_from_the_configs():
    text = (REPO / "MLproject").read_text()
    assert text == render_mlproject(), "MLproject is stale: run `covidseg mlproject > MLproject`"
    spec = yaml.safe_load(text)
    assert set(spec["entry_points"]) == set(CONFIGS) == set(RUNNERS)
    for name, cls in CONFIGS.items():
        params = spec["entry_points"][name]["parameters"]
        assert list(params) == list(cls.__dataclass_fields__), name
        for p in ("data", "seed", "experiment", "device"):
            assert p in params
        assert spec["entry_points"][name]["command"].startswith(f"python entrypoints/{name}.py")


def test_spec_parameter_names_and_defaults():
    from covidseg.config import FinetuneConfig, PreprocessConfig, PseudolabelConfig

    p = PreprocessConfig()
    assert (p.data, p.seed, p.intensity, p.lung_method, p.window_min, p.window_max,
            p.test_cases, p.folds, p.strict) == ("demo", 0, "auto", "auto", -1250.0, 250.0, 20, 5,
                                                 False)
    f = FinetuneConfig()  # SPEC §9: defaults chosen on real data; the thesis's by name
    assert (f.init, f.strategy, f.loss, f.lr_step, f.lr_gamma) == ("scratch", "all", "ce+dice",
                                                                  25, 0.8)
    assert (f.recipe, f.optimizer, f.schedule, f.epochs, f.iterations_per_epoch, f.keep) == (
        "covidseg", "adamw", "cosine", 0, 0, "last")  # epochs: the plan's
    t = FinetuneConfig(recipe="thesis")  # its 500 epochs of one pass: the plan's
    assert (t.optimizer, t.lr, t.schedule, t.lr_step, t.lr_gamma, t.patience, t.keep,
            t.dice) == ("adam", 2e-4, "step", 25, 0.8, 30, "best", "sample")
    # a value given explicitly wins, even one equal to the other recipe's
    given = FinetuneConfig(recipe="thesis", lr=1e-3, keep="last", dice="batch", patience=0)
    assert (given.lr, given.keep, given.dice, given.patience, given.optimizer) == (
        1e-3, "last", "batch", 0, "adam")
    # what the recipe filled in (logged as recipe_<name>), and nothing that was given
    assert given.recipe_filled == {"optimizer": "adam", "weight_decay": 0.0, "schedule": "step",
                                   "warmup": 0, "grad_clip": 0.0}
    assert FinetuneConfig(lr=2e-4, optimizer="adam").schedule == "cosine"
    s = PseudolabelConfig()
    assert (s.patch_size, s.labelled_patches, s.patches_per_volume, s.rule, s.sim_low,
            s.sim_high, s.sim_min) == (0, 120, 32, "top1-band", 0.87, 0.96, 0.90)










