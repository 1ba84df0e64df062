"""The group's tracking server: the docker-compose file validates, its mlflow command is the one
the tests run, and that command works against a real PostgreSQL backend with `mlflow run`; Optuna
shares a PostgreSQL study between two workers."""

import re
import shutil
import subprocess
from pathlib import Path

import optuna
import pytest
import yaml

from tests.conftest import (
    REPO,
    TINY_DEMO,
    MlflowServer,
    Postgres,
    _pg_bin,
    mlflow_run,
    subprocess_env,
)
from tests.unit.tracking.test_local_server import compose_resolved


@pytest.mark.skipif(shutil.which("docker-compose") is None,
                    reason="Debian's docker-compose is not installed (.ci/run installs it)")
@pytest.mark.e2e
def test_compose_file_validates_only_with_its_secrets(tmp_path):
    def config(env_lines):
        env_file = tmp_path / "env"
        env_file.write_text("\n".join(env_lines) + "\n")
        return subprocess.run(["docker-compose", "-f", str(REPO / "docker-compose.yml"),
                               "--env-file", str(env_file), "config"], capture_output=True,
                              encoding="utf-8", errors="replace", cwd=tmp_path, timeout=60,
                              env={k: v for k, v in subprocess_env().items()
                                   if not k.startswith(("POSTGRES_", "MLFLOW_"))})

    r = config([])
    assert r.returncode != 0 and "POSTGRES_PASSWORD" in r.stderr + r.stdout
    # every secret with the characters that break a URL
    secrets = ["POSTGRES_PASSWORD=pg@S3:c/r%e#t", "MLFLOW_ADMIN_USERNAME=admin",
               "MLFLOW_ADMIN_PASSWORD=ml@S3:c/r%e#t", "MLFLOW_SECRET_KEY=k3y@:/%#"]
    r = config(secrets)
    assert r.returncode != 0 and "WORKER_DB_PASSWORD" in r.stderr + r.stdout
    r = config(secrets + ["WORKER_DB_PASSWORD=wk@S3:c/r%e#t"])
    assert r.returncode == 0, r.stderr
    rendered = yaml.safe_load(r.stdout)["services"]
    env = rendered["mlflow"]["environment"]
    assert env["MLFLOW_BACKEND_STORE_URI"] == "postgresql://postgres:5432/mlflow"
    assert env["PGPASSWORD"] == "pg@S3:c/r%e#t" and env["MLFLOW_AUTH_ADMIN_PASSWORD"] == \
        "ml@S3:c/r%e#t" and env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == "k3y@:/%#"
    assert rendered["optuna-dashboard"]["environment"]["WORKER_DB_PASSWORD"] == "wk@S3:c/r%e#t"
    assert "127.0.0.1" in r.stdout and "basic-auth" in r.stdout


@pytest.mark.e2e
@pytest.mark.skipif(_pg_bin("initdb") is None, reason="PostgreSQL binaries not installed")
def test_the_compose_servers_environment_with_url_characters_in_every_secret(tmp_path,
                                                                              monkeypatch):
    """The mlflow service's environment from docker-compose.yml, secrets holding @ : / % #, on a
    real PostgreSQL that checks passwords (scram over TCP): the server starts on it, the admin
    logs in, a run is written and read back."""
    import uuid

    import psycopg
    from mlflow.tracking import MlflowClient
    from psycopg import sql

    secret = "pg@S3:c/r%2F#t"
    root = Path("/tmp") / f"covidseg-pg-{uuid.uuid4().hex[:8]}"  # reachable by `postgres`
    pg = Postgres(root, host_auth="scram-sha-256").start()
    try:
        with psycopg.connect(host=str(pg.sock), port=pg.port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE covidseg LOGIN PASSWORD {}").format(
                sql.Literal(secret)))
            conn.execute("CREATE DATABASE mlflow OWNER covidseg")
        env = compose_resolved()["services"]["mlflow"]["environment"]
        uri = env["MLFLOW_BACKEND_STORE_URI"].replace("postgres:5432", f"127.0.0.1:{pg.port}")
        assert secret not in uri and "@" not in uri
        monkeypatch.setenv("PGUSER", env["PGUSER"])
        monkeypatch.setenv("PGPASSWORD", env["PGPASSWORD"].replace("<POSTGRES_PASSWORD>", secret))
        admin = ("admin", "Adm1n@:/%#-long")
        server = MlflowServer(tmp_path / "server", backend_store_uri=uri, auth=admin).start()
        try:
            monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", admin[0])
            monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin[1])
            client = MlflowClient(server.uri)
            run = client.create_run(client.create_experiment("url-characters")).info.run_id
            client.log_param(run, "checked", "yes")
            assert client.get_run(run).data.params == {"checked": "yes"}
        finally:
            server.stop()
        monkeypatch.setenv("PGPASSWORD", "wrong")  # the password is really checked
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(host="127.0.0.1", port=pg.port, dbname="mlflow").close()
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.e2e
def test_a_member_logs_to_other_members_experiments_and_cannot_delete_their_work(tmp_path,
                                                                                 monkeypatch):
    """`covidseg add-member` as the admin: bob runs `covidseg preprocess` in alice's experiment and
    logs to the Default one, but may not delete her run or experiment nor re-permission it; a
    login that is not a member gets one line naming user, permission, experiment and the grant."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from covidseg.tracking.members import _auth_client

    admin = ("admin", "Adm1n-passw0rd-long")
    server = MlflowServer(tmp_path / "server", auth=admin).start()

    def covidseg(user, *args, **extra):
        env = subprocess_env(MLFLOW_TRACKING_URI=server.uri, MLFLOW_TRACKING_USERNAME=user,
                             MLFLOW_TRACKING_PASSWORD=f"{user}-passw0rd-long"
                             if user != "admin" else admin[1], **extra)
        return subprocess.run(["covidseg", *args], cwd=tmp_path, capture_output=True,
                              encoding="utf-8", errors="replace", timeout=600, env=env)

    def as_user(user):
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD",
                           admin[1] if user == "admin" else f"{user}-passw0rd-long")
        return MlflowClient(server.uri)

    try:
        for user in ("alice", "bob"):
            r = covidseg("admin", "add-member", user,
                         COVIDSEG_MEMBER_PASSWORD=f"{user}-passw0rd-long")
            assert r.returncode == 0, r.stderr[-2000:]
            assert f"{user} (new login) is a member" in r.stdout
        r = covidseg("admin", "add-member", "bob")  # again: nothing changes, no password needed
        assert r.returncode == 0 and "bob (existing login) is a member" in r.stdout
        r = covidseg("bob", "add-member", "mallory", COVIDSEG_MEMBER_PASSWORD="x" * 16)
        assert r.returncode == 2 and "needs the server's admin" in r.stderr.strip().splitlines()[-1]
        as_user("admin")
        _auth_client(server.uri).create_user("carol", "carol-passw0rd-long")  # not a member

        alice = as_user("alice")
        exp = alice.create_experiment("alice-exp")
        her_run = alice.create_run(exp).info.run_id
        r = covidseg("bob", "preprocess", *[f"--{k}={v}" for k, v in TINY_DEMO.items()],
                     "--experiment=alice-exp")
        assert r.returncode == 0, r.stderr[-3000:]
        bob = as_user("bob")
        bobs = [x for x in bob.search_runs([exp]) if x.info.run_id != her_run]
        assert len(bobs) == 1 and bobs[0].info.status == "FINISHED"
        assert bobs[0].data.tags["mlflow.user"] == "bob"  # the login, not the machine's user
        bob.log_metric(bob.create_run("0").info.run_id, "m", 1.0)  # the Default experiment
        for forbidden in (lambda: bob.delete_run(her_run), lambda: bob.delete_experiment(exp),
                          lambda: _auth_client(server.uri)
                          .grant_user_permission("bob", "experiment", exp, "MANAGE")):
            with pytest.raises(MlflowException) as denied:
                forbidden()
            assert denied.value.error_code == "PERMISSION_DENIED"
        assert alice.get_run(her_run).info.lifecycle_stage == "active"

        r = covidseg("carol", "preprocess", *[f"--{k}={v}" for k, v in TINY_DEMO.items()],
                     "--experiment=alice-exp")
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert r.stderr.strip().splitlines()[-1] == (
            "covidseg preprocess: error: user carol may not create runs in experiment "
            "'alice-exp' (MLflow: Permission denied; it needs EDIT): the server's admin grants "
            "it to every experiment with `covidseg add-member carol`, the experiment's owner to "
            "this one in the MLflow UI")
    finally:
        server.stop()


@pytest.mark.e2e
def test_a_login_protected_server_refuses_strangers_and_serves_members(tmp_path, monkeypatch):
    """MLflow's basic-auth app, started as the compose file starts it: an anonymous request gets
    401, the admin gets in; covidseg runs with the credentials finish (the UI after login shows
    the finetune run with its dataset, screenshot logged), with a wrong password or none they
    stop at once with one line."""
    import requests

    server = MlflowServer(tmp_path / "server", auth=("admin", "Adm1n-passw0rd-long")).start()
    try:
        url = server.uri + "/api/2.0/mlflow/experiments/search"
        assert requests.get(url, params={"max_results": 1}, timeout=10).status_code == 401
        assert requests.get(url, params={"max_results": 1}, auth=("admin", "Adm1n-passw0rd-long"),
                            timeout=10).status_code == 200
        args = ["covidseg", "preprocess", *[f"--{k}={v}" for k, v in TINY_DEMO.items()]]
        ok = subprocess.run(args, cwd=tmp_path, capture_output=True, encoding="utf-8",
                            errors="replace", timeout=600, env=subprocess_env(
                                MLFLOW_TRACKING_URI=server.uri, MLFLOW_TRACKING_USERNAME="admin",
                                MLFLOW_TRACKING_PASSWORD="Adm1n-passw0rd-long"))
        assert ok.returncode == 0, ok.stderr[-3000:]
        run_id = re.search(r"run_id=([0-9a-f]{32})", ok.stdout).group(1)
        r = requests.get(server.uri + "/api/2.0/mlflow/runs/get", params={"run_id": run_id},
                         auth=("admin", "Adm1n-passw0rd-long"), timeout=10)
        assert r.json()["run"]["info"]["status"] == "FINISHED"
        # a training stage on the protected server; the UI after login shows it with its dataset
        ft = subprocess.run(["covidseg", "finetune", "--data", run_id, "--epochs", "1",
                             "--iterations_per_epoch", "4", "--encoder", "resnet18",
                             "--batch_size", "8", "--workers", "0",
                             "--checkpoint_every", "0", "--overlays", "0"], cwd=tmp_path,
                            capture_output=True, encoding="utf-8", errors="replace", timeout=900,
                            env=subprocess_env(MLFLOW_TRACKING_URI=server.uri,
                                               MLFLOW_TRACKING_USERNAME="admin",
                                               MLFLOW_TRACKING_PASSWORD="Adm1n-passw0rd-long"))
        assert ft.returncode == 0, ft.stderr[-3000:]
        if shutil.which("chromium"):
            from mlflow.tracking import MlflowClient

            from tests.helpers import LoginProxy, chromium

            monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
            monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "Adm1n-passw0rd-long")
            client = MlflowClient(server.uri)
            exp = client.get_experiment_by_name("finetune")
            run = client.search_runs([exp.experiment_id])[0]
            proxy = LoginProxy(server.uri, "admin", "Adm1n-passw0rd-long")  # a logged-in browser
            try:
                shot = tmp_path / "ui_run_after_login.png"
                dom = chromium(f"{proxy.uri}/#/experiments/{exp.experiment_id}/runs/"
                               f"{run.info.run_id}", tmp_path, shot)
            finally:
                proxy.close()
            key = run.inputs.dataset_inputs[0].dataset.digest
            assert run.info.run_name in dom and "Datasets" in dom and key in dom
            assert shot.stat().st_size > 20_000
            client.log_artifact(run.info.run_id, str(shot), "ui")  # browsable with the run
        for user, password in (("admin", "wrong"), (None, None)):
            env = {"MLFLOW_TRACKING_URI": server.uri}
            if user:
                env.update(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password)
            bad = subprocess.run(args, cwd=tmp_path, capture_output=True, encoding="utf-8",
                                 errors="replace", timeout=300, env={
                                     k: v for k, v in subprocess_env(**env).items()
                                     if user or not k.startswith("MLFLOW_TRACKING_USER")})
            assert bad.returncode == 2, bad.stderr[-2000:]
            lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
            assert lines[-1].startswith("covidseg preprocess: error:") and "refused" in lines[-1]
            assert "Traceback" not in bad.stderr
    finally:
        server.stop()


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


def test_optuna_study_on_postgresql_with_two_workers(postgres, tracking_uri, preprocess_run,
                                                     tmp_path):
    storage = postgres("optuna")
    cmd = ["covidseg", "tune", "--data", preprocess_run, "--params",
           "epochs=1,encoder=resnet18,batch_size=8,workers=0,iterations_per_epoch=4",
           "--n_trials", "1", "--study_name",
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


@pytest.mark.e2e
def test_the_dashboard_is_read_only_and_checks_the_host(postgres, tmp_path):
    """docker/dashboard.py, run as the container runs it, on a PostgreSQL Optuna database: the
    dashboard shows the study to a known Host, refuses an anonymous DELETE of it (405: the study
    stays) and any other Host (403: no DNS rebinding)."""
    import sys
    import time

    import requests

    from tests.conftest import free_port

    url = postgres("dashboard")  # postgresql://postgres@127.0.0.1:PORT/NAME
    study = optuna.create_study(study_name="kept", storage=url)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    port = free_port()
    host_port, name = url.split("@", 1)[1].split("/", 1)
    env = {**subprocess_env(), "WORKER_DB_USER": "postgres", "WORKER_DB_PASSWORD": "w@:/%#x",
           "OPTUNA_DB": name, "DASHBOARD_DB_HOST": host_port, "DASHBOARD_BIND": "127.0.0.1",
           "DASHBOARD_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, str(REPO / "docker" / "dashboard.py")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                ok = requests.get(f"{base}/api/studies", headers={"Host": "localhost"}, timeout=5)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
                time.sleep(0.5)
        assert ok.status_code == 200 and "kept" in ok.text
        sid = study._study_id
        r = requests.delete(f"{base}/api/studies/{sid}", headers={"Host": "localhost"},
                            timeout=5)
        assert r.status_code == 405 and "read-only" in r.text
        r = requests.get(f"{base}/api/studies", headers={"Host": "evil.example"}, timeout=5)
        assert r.status_code == 403 and "kept" not in r.text
        r = requests.get(f"{base}/api/studies", headers={"Host": "127.0.0.1:8080"}, timeout=5)
        assert r.status_code == 200
        assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["kept"]
    finally:
        proc.terminate()
        proc.wait(10)
