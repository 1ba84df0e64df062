"""The package's layers, checked on the source: a module imports only modules of its own layer or
of lower ones, and no group of modules imports itself round (no cycle, function-level imports
included).  Lowest first:

    base      covidseg/base/: errors, redact, paths, device (no covidseg imports above base)
    data      formats, readers, layouts, geometry, intensity, lungs, the preprocessing steps and
              the dataset build, slices (no MLflow); its settings objects and vocabularies
    models    networks, checkpoints, surgery
    inference covidseg/inference/: whole-volume inference, the predictor (one input read,
              preprocessed as at training time, predicted, written on its own grid), the report,
              the pipelined reader/writer, the slice viewer (no MLflow, no parameters)
    tracking  the Tracker protocol, its null and MLflow implementations, run references
    train     the loop, tasks, losses, metrics, evaluation, torchrun
    semi      pseudo-label methods, the mean-teacher task
    analysis  SVCCA
    config    the entry points' parameters (CLI, MLproject, Optuna), just below the stages: each
              layer's vocabulary module (data, models, train, semi) gives its choices, declared
              once; no layer below the stages takes a config (each its own settings objects or
              plain arguments, built by the stages)
    stages    covidseg/stages/: the entry points (datasets, preprocess, pretrain, finetune, …,
              predict, tune, grid, pipeline) and the Stage context: they resolve ``data=``,
              decide what MLflow receives, run the layers below
    cli       the command line; covidseg/serving/: the pyfunc file MLflow executes to load a
              model (and ``covidseg.predict``, where models logged before covidseg/stages/
              existed find their predictor)
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[3] / "covidseg"

# each layer is a folder of covidseg/; the package's own modules (cli.py, __main__.py, predict.py)
# are what a shell or MLflow starts: the cli layer, with serving/
ROOT = "covidseg/*.py"
LAYERS = [
    ("base", ["base"]),
    ("data", ["data"]),
    ("models", ["models"]),
    ("inference", ["inference"]),
    ("tracking", ["tracking"]),
    ("train", ["train"]),
    ("semi", ["semi"]),
    ("analysis", ["analysis"]),
    # the parameters, declared once; their allowed values come from the layer that uses them
    ("config", ["config"]),
    # the entry points (covidseg/stages/): where data= is resolved and MLflow upload policy lives
    ("stages", ["stages"]),
    # what MLflow (a logged model) or a shell starts
    ("cli", ["serving", ROOT]),
]


def modules() -> dict[str, Path]:
    out = {}
    for p in PACKAGE.rglob("*.py"):
        parts = p.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def layer_of(module: str) -> int:
    """The layer of ``module``: that of its top folder under covidseg/; a module directly in
    covidseg/ is cli; the package itself (``covidseg``: its version) is base."""
    if module == "covidseg":
        return 0
    top = module.split(".")[1]
    folder = (PACKAGE / top).is_dir()
    for i, (_, folders) in enumerate(LAYERS):
        if (top in folders if folder else ROOT in folders):
            return i
    raise AssertionError(f"{module}: its folder covidseg/{top}/ belongs to no layer: add it to "
                         "LAYERS")


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """covidseg modules ``path`` imports anywhere (module level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "covidseg":
                continue
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names
                       if f"{node.module}.{a.name}" in known)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "covidseg")
    return {m for m in out if m in known}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports(p, known) - {m} for m, p in known.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in g:
        if v not in index:
            visit(v)
    return found


def test_every_module_imports_only_its_own_layer_or_lower_ones():
    g = graph()
    upward = [f"{m} ({LAYERS[layer_of(m)][0]}) imports {i} ({LAYERS[layer_of(i)][0]})"
              for m, deps in sorted(g.items()) for i in sorted(deps)
              if layer_of(i) > layer_of(m) and not i == "covidseg"]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    g = {m: {d for d in deps if d != "covidseg"} for m, deps in graph().items()}
    assert not cycles(g), cycles(g)


def test_only_the_tracking_package_imports_mlflow():
    offenders = []
    for name, path in modules().items():
        if name.startswith("covidseg.tracking"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            mods = ([node.module] if isinstance(node, ast.ImportFrom) and node.module else
                    [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            if any(m.split(".")[0] == "mlflow" for m in mods):
                offenders.append(name)
    assert not offenders, offenders


def test_the_checker_sees_an_upward_import_and_a_cycle(tmp_path):
    """The check itself can fail: an upward import and a two-module cycle are reported."""
    assert layer_of("covidseg.data.lungs") < layer_of("covidseg.train.loop")
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from covidseg.train.loop import fit\n")
    assert "covidseg.train.loop" in imports(src, modules())


def test_models_logged_before_the_stages_package_find_their_predictor():
    """Each logged model runs its own copy of the pyfunc file; those logged before covidseg/stages/
    import ``covidseg.predict.Predictor``, those logged before covidseg/serving/
    ``covidseg.stages.predict.Predictor``: both open a model folder (``from_dir``) and predict
    with inference's predictor."""
    import covidseg.predict
    import covidseg.stages.predict
    from covidseg.inference.predictor import Predictor

    assert covidseg.predict.Predictor is covidseg.stages.predict.Predictor
    assert issubclass(covidseg.stages.predict.Predictor, Predictor)
    for method in ("from_dir", "decision_threshold", "predict_file", "predict_slices"):
        assert callable(getattr(covidseg.stages.predict.Predictor, method)), method


def test_a_module_is_in_the_layer_of_its_folder():
    """LAYERS names folders only, so a module in a folder is in that folder's layer (no module
    listed apart from its folder, as the pyfunc model in tracking/ once was), and every folder of
    covidseg/ is in exactly one layer."""
    named = [f for _, folders in LAYERS for f in folders if f != ROOT]
    assert all("." not in f and "/" not in f for f in named), named
    folders = sorted(p.name for p in PACKAGE.iterdir()
                     if p.is_dir() and (p / "__init__.py").exists())
    assert sorted(named) == folders, (sorted(named), folders)
    assert layer_of("covidseg.cli") == layer_of("covidseg.serving.pyfunc_model") == len(LAYERS) - 1
    assert layer_of("covidseg.base.errors") == layer_of("covidseg") == 0


def config_parameters(path: Path) -> list[str]:
    """``function(parameter)`` for each parameter of a function or method in ``path`` that is
    named ``cfg`` or annotated with a ``*Config`` class."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        a = node.args
        for arg in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg]:
            if arg is None:
                continue
            note = ast.unparse(arg.annotation) if arg.annotation is not None else ""
            if arg.arg == "cfg" or any(w.endswith("Config") for w in re.split(r"\W+", note)):
                found.append(f"{getattr(node, 'name', 'lambda')}({arg.arg})")
    return found


def test_the_layers_below_the_stages_take_their_own_settings_not_a_config():
    """Parameters vs settings (issue 26): the parameters are declared once, in covidseg.config;
    the layers below the stages are handed their own small settings objects or plain arguments
    (covidseg/data/settings.py, inputs.InputSettings, train.supervised.SupervisedSettings,
    train.plan.PlanRequest, the parameters a run logs), which the stage builds from them.  The
    config layer itself is exempt: it is where the configurations live."""
    stages = layer_of("covidseg.stages")
    below = {name: path for name, path in sorted(modules().items())
             if layer_of(name) < stages and LAYERS[layer_of(name)][0] != "config"}
    assert {"covidseg.data.store", "covidseg.train.supervised", "covidseg.tracking.runs",
            "covidseg.semi.figures", "covidseg.base.device", "covidseg.inference"} <= set(below)
    offenders = [f"{p.relative_to(PACKAGE.parent)}: {f}"
                 for p in below.values() for f in config_parameters(p)]
    assert not offenders, "\n".join(offenders)


def test_the_settings_check_sees_a_config_parameter(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f(a, cfg):\n    pass\n\n\nclass C:\n"
                   "    def g(self, x: 'PreprocessConfig | None' = None):\n        pass\n\n"
                   "    def h(self, settings: PreprocessSettings):\n        pass\n")
    assert config_parameters(src) == ["f(cfg)", "g(x)"]


def test_each_vocabulary_is_declared_once_by_the_layer_that_uses_it():
    """The allowed values of loss, dice, strategy, pseudo-label source and semi-supervised method
    are the owning layer's enums (train, models, semi), which both the layer's code and the
    config's choices use; importing the config loads no torch (the command line's --help)."""
    import subprocess
    import sys
    from dataclasses import fields

    from covidseg.config import FinetuneConfig, MeanteacherConfig, PseudolabelConfig
    from covidseg.models.surgery import STRATEGIES
    from covidseg.models.vocabulary import Strategy
    from covidseg.semi.pseudoset import SOURCES
    from covidseg.semi.teacher import METHODS
    from covidseg.semi.vocabulary import PseudoSource, SemiMethod
    from covidseg.train.losses import DICE_MODES, LOSSES
    from covidseg.train.vocabulary import DiceMode, Loss

    def choices(cls, name):
        return next(f.metadata["choices"] for f in fields(cls) if f.name == name)

    assert choices(FinetuneConfig, "loss") == tuple(LOSSES) == Loss.values()
    assert choices(FinetuneConfig, "dice") == ("", *DICE_MODES) and DICE_MODES == DiceMode.values()
    assert choices(FinetuneConfig, "strategy") == STRATEGIES == Strategy.values()
    assert choices(PseudolabelConfig, "source") == tuple(SOURCES) == PseudoSource.values()
    assert choices(MeanteacherConfig, "method") == tuple(METHODS) == SemiMethod.values()
    probe = subprocess.run([sys.executable, "-c", "import sys, covidseg.config; "
                            "print('torch' in sys.modules)"], capture_output=True, text=True)
    assert probe.stdout.strip() == "False", probe.stderr[-2000:]
