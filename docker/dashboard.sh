#!/bin/sh
# optuna-dashboard on the Optuna database, as the workers' role (which owns that database: tables
# the dashboard creates stay writable for the workers): read-only, answering only the host names
# in DASHBOARD_ALLOWED_HOSTS (docker/dashboard.py). The storage URL (with its password) is built
# from the environment inside Python: it is on no command line (docker-compose.yml, ps,
# /proc/*/cmdline).
set -eu
exec python /usr/local/lib/covidseg/dashboard.py
