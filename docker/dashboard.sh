#!/bin/sh
# optuna-dashboard on the Optuna database. The storage URL (with its password) is built from the
# environment inside Python: it is on no command line (docker-compose.yml, ps, /proc/*/cmdline).
set -eu
exec python -c 'import os, optuna_dashboard
url = "postgresql://{}:{}@postgres:5432/{}".format(os.environ["POSTGRES_USER"],
      os.environ["POSTGRES_PASSWORD"], os.environ["OPTUNA_DB"])
optuna_dashboard.run_server(url, host="0.0.0.0", port=8080)'
