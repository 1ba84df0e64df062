#!/bin/sh
# optuna-dashboard on the Optuna database, as the workers' role (which owns that database: tables
# the dashboard creates stay writable for the workers). The storage URL (with its password) is
# built from the environment inside Python: it is on no command line (docker-compose.yml, ps,
# /proc/*/cmdline).
set -eu
exec python -c 'import os, optuna_dashboard
from urllib.parse import quote
url = "postgresql://{}:{}@postgres:5432/{}".format(quote(os.environ["WORKER_DB_USER"], safe=""),
      quote(os.environ["WORKER_DB_PASSWORD"], safe=""), os.environ["OPTUNA_DB"])
optuna_dashboard.run_server(url, host="0.0.0.0", port=8080)'
