#!/bin/sh
# optuna-dashboard on the shared Optuna database, as docker compose's `dashboard` service runs it.
# Required: SWEEPER_OPTUNA_STORAGE. Optional: DASHBOARD_HOST (0.0.0.0), DASHBOARD_PORT (8080).
set -eu
: "${SWEEPER_OPTUNA_STORAGE:?}"
exec optuna-dashboard --host "${DASHBOARD_HOST:-0.0.0.0}" --port "${DASHBOARD_PORT:-8080}" "$SWEEPER_OPTUNA_STORAGE"
