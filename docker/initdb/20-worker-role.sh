#!/bin/sh
# The role `tune` and `grid` workers log in as (from other machines, through an SSH tunnel to the
# published 127.0.0.1 port): it owns the Optuna database — studies, grids among them — and may not
# connect to MLflow's backend store, so a worker's password opens no run, user or model.
# Runs on the first start (docker-entrypoint-initdb.d); idempotent, so an existing server gets the
# role with: docker-compose exec postgres sh /docker-entrypoint-initdb.d/20-worker-role.sh
# The password is read by psql from the environment (\getenv): it is on no command line.
set -eu
: "${WORKER_DB_PASSWORD:?set WORKER_DB_PASSWORD in .env}"
export WORKER_DB_USER="${WORKER_DB_USER:-covidseg_worker}" OPTUNA_DB="${OPTUNA_DB:-optuna}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'EOSQL'
\getenv worker_user WORKER_DB_USER
\getenv worker_password WORKER_DB_PASSWORD
\getenv optuna_db OPTUNA_DB
\getenv mlflow_db POSTGRES_DB
SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'worker_user') AS missing \gset
\if :missing
CREATE ROLE :"worker_user" LOGIN PASSWORD :'worker_password';
\else
ALTER ROLE :"worker_user" LOGIN PASSWORD :'worker_password';
\endif
ALTER DATABASE :"optuna_db" OWNER TO :"worker_user";
REVOKE CONNECT, TEMPORARY ON DATABASE :"mlflow_db" FROM PUBLIC;
\connect :"optuna_db"
-- tables made before the role existed (studies of an older server) move to it
SELECT format('ALTER TABLE %I.%I OWNER TO %I', schemaname, tablename, :'worker_user')
  FROM pg_tables WHERE schemaname = 'public' \gexec
EOSQL
