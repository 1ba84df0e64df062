"""The ``mlflow server`` the group runs, as a command line, and a throw-away one for the tests and
the benchmarks.  Not on the runtime path: no covidseg module imports this one (a test checks);
``tests/conftest.py``, ``tests/e2e/test_server.py`` and ``benchmarks/bench.py`` do.

:func:`server_command` is the command line docker-compose.yml runs
(``tests/unit/tracking/test_local_server.py`` checks that the two agree); :class:`LocalServer`
runs the same command with SQLite on a free loopback port.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from covidseg.base.errors import TrackingUnavailable


def server_command(backend_store_uri: str | None, artifacts_destination: str,
                   host: str = "0.0.0.0", port: int = 5000, allowed_hosts: str | None = None,
                   workers: int = 1, executable: list[str] | None = None,
                   auth: bool = False) -> list[str]:
    """The ``mlflow server`` command line the group server runs (docker-compose and tests alike):
    a database backend store (None: from ``MLFLOW_BACKEND_STORE_URI``, so that its password is
    not on the command line), artifacts served by the server itself, MLflow 3's Host check, and
    with ``auth`` MLflow's basic-auth app (login required; admin from
    ``MLFLOW_AUTH_ADMIN_USERNAME``/``_PASSWORD``, see :func:`auth_environment`)."""
    cmd = list(executable or ["mlflow"]) + ["server"]
    if backend_store_uri:
        cmd += ["--backend-store-uri", backend_store_uri]
    cmd += [
        "--serve-artifacts",
        "--artifacts-destination", artifacts_destination,
        "--host", host,
        "--port", str(port),
        "--workers", str(workers),
    ]
    if allowed_hosts:
        cmd += ["--allowed-hosts", allowed_hosts]
    if auth:
        cmd += ["--app-name", "basic-auth"]
    return cmd


def auth_environment(root: Path, username: str, password: str, secret_key: str) -> dict:
    """Environment of a basic-auth ``mlflow server``: its config file (users in ``root``'s
    SQLite, every user reads by default), the first admin, the CSRF key — secrets in the
    environment, never on a command line."""
    ini = Path(root) / "basic_auth.ini"
    ini.write_text("[mlflow]\ndefault_permission = READ\n"
                   f"database_uri = sqlite:///{Path(root).resolve() / 'basic_auth.db'}\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    return {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_USERNAME": username,
            "MLFLOW_AUTH_ADMIN_PASSWORD": password, "MLFLOW_FLASK_SERVER_SECRET_KEY": secret_key}


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    """A throw-away ``mlflow server`` (the group server's command, SQLite by default) on a free
    loopback port: the tests and the benchmarks start one when no server is given."""

    def __init__(self, root: Path, backend_store_uri: str | None = None,
                 auth: tuple[str, str] | None = None, workers: int = 1):
        import sys

        self.root = Path(root)
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        backend = backend_store_uri or f"sqlite:///{self.root / 'mlflow.db'}"
        self.cmd = server_command(backend, str(self.root / "artifacts"), host="127.0.0.1",
                                  port=self.port, workers=workers,
                                  executable=[sys.executable, "-m", "mlflow"], auth=bool(auth))
        self.auth = auth
        self.proc = None

    def start(self, timeout: float = 120.0) -> LocalServer:
        """Start the server and wait until ``/health`` answers (its log: ``root/server.log``)."""
        import requests

        self.root.mkdir(parents=True, exist_ok=True)
        # (MLFLOW_DISABLE_TELEMETRY is in os.environ already: importing covidseg sets it)
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        if self.auth:
            env.update(auth_environment(self.root, *self.auth, secret_key=os.urandom(16).hex()))
        with open(self.root / "server.log", "ab") as log:
            self.proc = subprocess.Popen(self.cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, cwd=self.root)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                tail = (self.root / "server.log").read_text(errors="replace")[-2000:]
                raise TrackingUnavailable(f"mlflow server exited: {tail}")
            try:
                if requests.get(self.uri + "/health", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.stop()
        raise TrackingUnavailable(f"mlflow server on {self.uri} did not become healthy")

    def stop(self) -> None:
        """Stop the server's process group (SIGTERM, then SIGKILL after 20 s)."""
        import signal

        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def pg_bin(name: str) -> str | None:
    import glob
    import shutil

    found = shutil.which(name)
    if found:
        return found
    hits = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return hits[-1] if hits else None


class LocalPostgres:
    """A throw-away PostgreSQL cluster on a free loopback port from the local binaries (as the
    `postgres` user when root), for the tests and benchmarks; ``host_auth`` scram-sha-256 makes
    TCP logins check passwords."""

    def __init__(self, root: Path, host_auth: str = "trust"):
        self.root, self.port, self.host_auth = root, free_port(), host_auth
        self.data, self.sock = root / "data", root / "sock"

    def _as_owner(self, cmd: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd

    def start(self) -> LocalPostgres:
        import shutil

        self.root.mkdir(parents=True, exist_ok=True)
        self.sock.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.sock, "postgres")
        if not (self.data / "PG_VERSION").exists():  # a second start restarts the cluster
            subprocess.run(self._as_owner([pg_bin("initdb"), "-D", str(self.data), "-U",
                                           "postgres", "--auth-local=trust",
                                           f"--auth-host={self.host_auth}", "-E", "UTF8"]),
                           check=True, capture_output=True, timeout=120)
        subprocess.run(self._as_owner([pg_bin("pg_ctl"), "-D", str(self.data), "-l",
                                       str(self.root / "pg.log"), "-w", "-o",
                                       f"-p {self.port} -k {self.sock} "
                                       "-c listen_addresses=127.0.0.1",
                                       "start"]), check=True, capture_output=True, timeout=120)
        return self

    def create_db(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        subprocess.run(self._as_owner([pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast",
                                       "stop"]), capture_output=True, timeout=60)
