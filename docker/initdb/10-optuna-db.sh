#!/bin/sh
# A second database on the same server for Optuna studies (tune -P storage=postgresql://…/optuna).
set -e
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -c "CREATE DATABASE \"${OPTUNA_DB:-optuna}\""
