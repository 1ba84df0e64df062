"""The tracking package's shape: both trackers implement the whole :class:`Tracker` protocol
themselves (a forgotten method is a failure here, not a silent no-op), the tag names are one
enum that behaves as plain strings, tracking depends on no covidseg stage, and the throw-away
server stays off the runtime path.  (That only ``covidseg.tracking`` imports MLflow is checked
in ``tests/unit/house/test_layers.py``.)"""

from __future__ import annotations

import ast
import inspect
import json
from pathlib import Path

from covidseg.tracking import MlflowTracker, NullTracker, Tag, Tracker

PACKAGE = Path(__file__).resolve().parents[3] / "covidseg"


def protocol_methods() -> list[str]:
    return sorted(name for name, value in vars(Tracker).items()
                  if callable(value) and not name.startswith("_"))


def test_both_trackers_define_every_method_of_the_protocol_themselves():
    methods = protocol_methods()
    assert {"log_metrics", "figure", "link_source", "log_model"} <= set(methods)
    assert not issubclass(MlflowTracker, NullTracker)  # no inherited no-op can hide a gap
    for cls in (NullTracker, MlflowTracker):
        missing = [m for m in methods if m not in vars(cls)]
        assert not missing, f"{cls.__name__} lacks {missing}"
        for m in methods:  # same parameters, same defaults
            want = inspect.signature(getattr(Tracker, m))
            got = inspect.signature(getattr(cls, m))
            assert list(got.parameters.values()) == list(want.parameters.values()), (cls, m)
    assert isinstance(NullTracker(), Tracker)


def test_tags_are_plain_strings_to_mlflow_and_to_run_data():
    assert Tag.ENTRY_POINT == "covidseg.entry_point" and f"{Tag.DATASET_KEY}" == \
        "covidseg.dataset_key" and str(Tag.GRID_KEY) == "covidseg.grid_key"
    assert {"covidseg.dataset_key": "k"}.get(Tag.DATASET_KEY) == "k"  # run.data.tags lookup
    assert json.dumps({Tag.ERROR: 1}) == '{"covidseg.error": 1}'
    assert Tag.source("init") == "covidseg.source.init" and Tag.stage("finetune") == \
        "covidseg.stage.finetune"
    assert all(t.value.startswith("covidseg.") for t in Tag)
    assert len({t.value for t in Tag}) == len(Tag)


def _covidseg_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.split(".")[0] == "covidseg"}


def test_tracking_imports_only_the_base_modules_and_itself():
    allowed = ("covidseg.base.errors", "covidseg.base.redact", "covidseg.base.paths",
               "covidseg.config", "covidseg.tracking", "covidseg.__version__")
    wrong = {f"{p.name}: {m}" for p in (PACKAGE / "tracking").glob("*.py")
             for m in _covidseg_imports(p)
             if m != "covidseg" and not m.startswith(allowed)}
    assert not wrong, sorted(wrong)


def test_the_local_server_and_the_pyfunc_model_are_off_the_runtime_path():
    """Only the file MLflow executes (covidseg/serving/pyfunc_model.py) uses the MLflow model
    class; nothing imports that file or the local server."""
    off_path = ("covidseg.tracking.local_server", "covidseg.tracking.pyfunc", "covidseg.serving")
    loader = PACKAGE / "serving" / "pyfunc_model.py"
    users = {f"{p.relative_to(PACKAGE)}: {m}" for p in PACKAGE.rglob("*.py") if p != loader
             for m in _covidseg_imports(p) if m.startswith(off_path)}
    assert not users, sorted(users)


def test_every_module_of_the_package_is_small():
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines())
             for p in (PACKAGE / "tracking").glob("*.py")}
    assert max(sizes.values()) <= 250, sizes


def test_importing_covidseg_turns_mlflows_telemetry_off_unless_the_user_turned_it_on(tmp_path):
    """MLflow 3 sends usage events to the internet from every process that imports it (unless
    it thinks it runs in CI): covidseg switches that off before mlflow is imported."""
    import os
    import subprocess
    import sys

    probe = ("import covidseg, mlflow; from mlflow.telemetry.client import get_telemetry_client;"
             " print(type(get_telemetry_client()).__name__)")
    ci = ("PYTEST_CURRENT_TEST", "GITHUB_ACTIONS", "CI", "CIRCLECI", "GITLAB_CI", "JENKINS_URL",
          "TRAVIS", "TF_BUILD", "BITBUCKET_BUILD_NUMBER", "CODEBUILD_BUILD_ARN", "BUILDKITE",
          "TEAMCITY_VERSION", "CLOUD_RUN_EXECUTION", "RUNBOT_HOST_URL", "RUNBOT_BUILD_NAME",
          "RUNBOT_WORKER_ID")  # MLflow keeps its telemetry off where one of these is set
    clean = {k: v for k, v in os.environ.items()
             if k not in (*ci, "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")}
    clean["XDG_CONFIG_HOME"] = str(tmp_path)  # where MLflow would keep its installation id
    off = subprocess.run([sys.executable, "-c", probe], env=clean, capture_output=True,
                         text=True, timeout=120)
    assert off.returncode == 0 and off.stdout.split()[-1] == "NoneType", off.stderr[-2000:]
    on = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                        env={**clean, "MLFLOW_DISABLE_TELEMETRY": "false"}, timeout=120)
    assert on.returncode == 0 and on.stdout.split()[-1] == "TelemetryClient", on.stderr[-2000:]


def test_the_login_is_the_runs_user_over_the_machines(monkeypatch):
    """`mlflow run` tags the machine's user name (root in a container, the same for every
    member); on a login server covidseg puts the login there, and leaves a run alone without one."""
    from covidseg.tracking.runs import run_identity

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    assert run_identity("finetune", {"mlflow.user": "root"}, renamed=False)["mlflow.user"] == "bob"
    assert "mlflow.user" not in run_identity("finetune", {"mlflow.user": "bob"}, renamed=False)
    # a member resuming another's run leaves who started it
    assert "mlflow.user" not in run_identity("finetune", {"mlflow.user": "alice"}, renamed=False,
                                             fresh=False)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    assert "mlflow.user" not in run_identity("finetune", {"mlflow.user": "root"}, renamed=False)
    assert run_identity("finetune", {}, renamed=False)["mlflow.user"]
