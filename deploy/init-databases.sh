#!/bin/sh
# PostgreSQL init script (docker-entrypoint-initdb.d): the Optuna and MLflow-auth databases next to
# the MLflow one (POSTGRES_DB=mlflow). Runs once, when the data volume is created.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
CREATE DATABASE optuna;
CREATE DATABASE mlflow_auth;
SQL
