"""The connection to the tracking server: where it is, and whether it answers.

A remote tracking server is checked with a short ``/health`` request (and, for a login-protected
one, a request with this client's credentials) before any work starts, and MLflow's HTTP
retries are bounded, so a server that is down fails fast with one clear line.
"""

from __future__ import annotations

import os

from covidseg.base.errors import TrackingUnavailable


def configure_http() -> None:
    """Bound MLflow's HTTP retries (unless the user set them): MLflow retries a dead server for
    minutes by default; six retries backing off 2, 4 … 32 s ride out ~60 s of a server (or its
    database) restarting, and then say so."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "6")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")


def tracking_uri() -> str:
    """MLflow's tracking URI (``MLFLOW_TRACKING_URI`` or what the process set)."""
    import mlflow

    return mlflow.get_tracking_uri()


def check_server(uri: str | None = None, timeout: float = 5.0) -> None:
    """Raise :class:`TrackingUnavailable` when an http(s) tracking server does not answer."""
    uri = uri or tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        r = requests.get(uri.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException as exc:
        raise TrackingUnavailable(f"MLflow tracking server {uri} is not reachable "
                                  f"({type(exc).__name__}); start it or fix "
                                  "MLFLOW_TRACKING_URI") from exc
    if r.status_code != 200:
        raise TrackingUnavailable(f"MLflow tracking server {uri} answered /health with HTTP "
                                  f"{r.status_code}; check the server (and --allowed-hosts)")
    # a login-protected server: are this client's credentials accepted? (one line, at once)
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    auth = (user, os.environ.get("MLFLOW_TRACKING_PASSWORD", "")) if user else None
    headers = {"Authorization": f"Bearer {token}"} if token and not user else {}
    try:
        r = requests.get(uri.rstrip("/") + "/api/2.0/mlflow/experiments/search",
                         params={"max_results": 1}, auth=auth, headers=headers, timeout=timeout)
    except requests.RequestException:
        return  # /health answered: let the run's own requests report anything else
    if r.status_code == 401:
        raise TrackingUnavailable(
            f"MLflow tracking server {uri} requires a login and refused "
            + (f"user {user!r} (wrong password?)" if user else "an anonymous client")
            + ": set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or "
            "MLFLOW_TRACKING_TOKEN)")


def connect() -> None:
    """Before talking to the server: bounded retries, and a server that answers (else
    :class:`TrackingUnavailable`)."""
    configure_http()
    check_server()


def server_lost(exc: Exception) -> bool:
    """Did ``exc`` come from a remote tracking server that is no longer there?"""
    if isinstance(exc, TrackingUnavailable):
        return False
    try:
        check_server(timeout=3.0)
    except TrackingUnavailable:
        return True
    return False
