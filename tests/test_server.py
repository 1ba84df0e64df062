"""The group's tracking server: the docker-compose file validates, its mlflow command is the one
the tests run, and that command works against a real PostgreSQL backend with `mlflow run`; Optuna
shares a PostgreSQL study between two workers."""

import re
import shutil
import subprocess

import optuna
import pytest
import yaml

from covidseg.tracking import server_command
from tests.conftest import REPO, TINY_DEMO, MlflowServer, mlflow_run, subprocess_env


def compose_resolved() -> dict:
    """docker-compose.yml with ${VAR:-default} replaced by the documented defaults."""
    text = (REPO / "docker-compose.yml").read_text()
    text = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: m.group(2), text)
    return yaml.safe_load(text)


def test_compose_mlflow_command_is_the_one_the_tests_run():
    spec = compose_resolved()
    cmd = [str(x) for x in spec["services"]["mlflow"]["command"]]
    expected = server_command(cmd[cmd.index("--backend-store-uri") + 1], "/mlartifacts",
                              host="0.0.0.0", port=5000,
                              allowed_hosts=cmd[cmd.index("--allowed-hosts") + 1],
                              workers=int(cmd[cmd.index("--workers") + 1]), executable=["mlflow"])
    assert cmd == expected
    assert cmd[cmd.index("--backend-store-uri") + 1].startswith("postgresql://")
    assert "mlflow:*" in cmd[cmd.index("--allowed-hosts") + 1]
    pg = spec["services"]["postgres"]
    assert "ports" not in pg and any("pgdata" in v for v in pg["volumes"])
    assert any(v.startswith("mlartifacts:") for v in spec["services"]["mlflow"]["volumes"])
    assert "healthcheck" in spec["services"]["mlflow"]


@pytest.mark.skipif(shutil.which("docker-compose") is None,
                    reason="Debian's docker-compose is not installed (.ci/run installs it)")
def test_compose_file_validates():
    r = subprocess.run(["docker-compose", "-f", str(REPO / "docker-compose.yml"), "config"],
                       capture_output=True, encoding="utf-8", errors="replace", cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "postgresql://covidseg:covidseg@postgres:5432/mlflow" in r.stdout


def test_entry_point_against_a_postgresql_backed_server(postgres, tmp_path):
    from mlflow.tracking import MlflowClient

    server = MlflowServer(tmp_path, backend_store_uri=postgres("mlflow")).start()
    try:
        run_id = mlflow_run("preprocess", TINY_DEMO, tmp_path, server.uri, "pg")
        info = MlflowClient(server.uri).get_run(run_id)
        assert info.info.status == "FINISHED" and info.data.metrics["n_cases"] == 11
        assert info.data.params["demo_size"] == "64"
        assert MlflowClient(server.uri).list_artifacts(run_id, "figures")
    finally:
        server.stop()


def test_optuna_study_on_postgresql_with_two_workers(postgres, tracking_uri, preprocess_run, tmp_path):
    storage = postgres("optuna")
    cmd = ["covidseg", "tune", "--data", preprocess_run, "--params",
           "epochs=1,encoder=resnet18,batch_size=8,workers=0", "--n_trials", "1", "--study_name",
           "pg-study", "--storage", storage, "--experiment", "tune-pg", "--search", "lr"]
    env = subprocess_env(MLFLOW_TRACKING_URI=tracking_uri)
    workers = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, encoding="utf-8", errors="replace")
               for _ in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=600)
        assert w.returncode == 0, err[-3000:]
    trials = optuna.load_study(study_name="pg-study", storage=storage).trials
    assert len(trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
