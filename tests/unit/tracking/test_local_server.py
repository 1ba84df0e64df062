"""The group's tracking server: the docker-compose file validates, its mlflow command is the one
the tests run, and that command works against a real PostgreSQL backend with `mlflow run`; Optuna
shares a PostgreSQL study between two workers."""

import re

import yaml

from covidseg.tracking.local_server import server_command
from tests.conftest import (
    REPO,
)


def compose_resolved() -> dict:
    """docker-compose.yml with ${VAR:-default} replaced by the documented defaults and the
    required secrets ${VAR:?message} by a placeholder."""
    text = (REPO / "docker-compose.yml").read_text(encoding="utf-8")
    text = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: m.group(2), text)
    text = re.sub(r"\$\{(\w+):\?[^}]*\}", lambda m: f"<{m.group(1)}>", text)
    return yaml.safe_load(text)


def test_compose_mlflow_command_is_the_one_the_tests_run():
    spec = compose_resolved()
    services = spec["services"]
    cmd = [str(x) for x in services["mlflow"]["command"]]
    expected = server_command(None, "/mlartifacts", host="0.0.0.0", port=5000,
                              allowed_hosts=cmd[cmd.index("--allowed-hosts") + 1],
                              workers=int(cmd[cmd.index("--workers") + 1]), executable=["mlflow"],
                              auth=True)
    assert cmd == expected and cmd[-2:] == ["--app-name", "basic-auth"]
    env = services["mlflow"]["environment"]
    # no secret inside a URL: libpq takes the role and its password from the environment
    assert env["MLFLOW_BACKEND_STORE_URI"] == "postgresql://postgres:5432/mlflow"
    assert (env["PGUSER"], env["PGPASSWORD"]) == ("covidseg", "<POSTGRES_PASSWORD>")
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == "<MLFLOW_ADMIN_PASSWORD>"
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == "<MLFLOW_SECRET_KEY>"
    assert str(env["MLFLOW_DISABLE_TELEMETRY"]).lower() == "true"  # nothing calls out
    assert "mlflow:*" in cmd[cmd.index("--allowed-hosts") + 1]
    # no secret on any command line, no default password, loopback ports, pinned images
    for name, svc in services.items():
        assert "postgresql://" not in " ".join(map(str, svc.get("command", []))), name
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
        image = svc.get("image", "")
        assert image and not image.endswith(":latest") and re.search(r":\d+\.\d+", image), image
        assert "healthcheck" in svc, name
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "<POSTGRES_PASSWORD>"
    dockerfile = (REPO / "docker" / "mlflow.Dockerfile").read_text(encoding="utf-8")
    import mlflow

    assert f"mlflow[auth]=={mlflow.__version__}" in dockerfile
    assert "FROM python:3.11.7-slim" in dockerfile
    assert not re.search(r'"[\w\[\]-]+>=', dockerfile)  # exact versions only
    pg = services["postgres"]
    assert any("pgdata" in v for v in pg["volumes"])
    # published for tune/grid workers on the server's loopback only (SSH tunnel), whatever
    # BIND_ADDRESS says; the workers' role has its own required password
    assert pg["ports"] == ["127.0.0.1:5432:5432"]
    assert pg["environment"]["WORKER_DB_PASSWORD"] == "<WORKER_DB_PASSWORD>"
    assert "WORKER_DB_PASSWORD" in (REPO / "docker" / "dashboard.py").read_text(encoding="utf-8")
    assert "dashboard.py" in (REPO / "docker" / "dashboard.sh").read_text(encoding="utf-8")
    assert "COPY docker/dashboard.py /usr/local/lib/covidseg/dashboard.py" in dockerfile
    assert any(v.startswith("mlartifacts:") for v in services["mlflow"]["volumes"])














