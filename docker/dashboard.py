"""optuna-dashboard for the group server: read-only and Host-checked.

optuna-dashboard has no login: anyone who reaches it may delete a study (``DELETE
/api/studies/<id>``), and it answers any Host header, so a page on another site could reach it
through a member's SSH tunnel by DNS rebinding.  Here it serves only ``GET``/``HEAD`` (405
otherwise) and only to the host names in ``DASHBOARD_ALLOWED_HOSTS`` (403 otherwise).  Its
database URL (with the workers' password) is built here from the environment (quoted: a
password may hold ``@ : / % #``), never on a command line.  Standalone (the image has no
covidseg): ``python dashboard.py``; the tests run this file as the container does.
"""

from __future__ import annotations

import os
from urllib.parse import quote

READ_ONLY = ("GET", "HEAD")


def guard(app, allowed_hosts: str):
    """``app`` answering only read requests whose Host (port aside) is in ``allowed_hosts``
    (comma-separated)."""
    allowed = {h.strip().lower() for h in allowed_hosts.split(",") if h.strip()}

    def guarded(environ, start_response):
        host = environ.get("HTTP_HOST", "").lower()
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 or "]" in host else host
        if host.strip("[]") not in allowed:
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [b"host not allowed (DASHBOARD_ALLOWED_HOSTS)\n"]
        if environ.get("REQUEST_METHOD", "GET") not in READ_ONLY:
            start_response("405 Method Not Allowed", [("Allow", ", ".join(READ_ONLY)),
                                                      ("Content-Type", "text/plain")])
            return [b"read-only dashboard: change studies with optuna or covidseg\n"]
        return app(environ, start_response)

    return guarded


def storage_url(env) -> str:
    """The Optuna database as the workers' role (which owns it)."""
    return "postgresql+psycopg://{}:{}@{}/{}".format(
        quote(env["WORKER_DB_USER"], safe=""), quote(env["WORKER_DB_PASSWORD"], safe=""),
        env.get("DASHBOARD_DB_HOST", "postgres:5432"), quote(env["OPTUNA_DB"], safe=""))


def main() -> None:
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    import optuna_dashboard

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):  # no request line (it may carry study names) in the log
            pass

    app = guard(optuna_dashboard.wsgi(storage_url(os.environ)),
                os.environ.get("DASHBOARD_ALLOWED_HOSTS", "localhost,127.0.0.1"))
    server = make_server(os.environ.get("DASHBOARD_BIND", "0.0.0.0"),
                         int(os.environ.get("DASHBOARD_PORT", "8080")), app,
                         handler_class=Quiet)
    server.serve_forever()


if __name__ == "__main__":
    main()
