#!/bin/sh
# One sweep worker, as docker compose's `worker` service runs it (scale with --scale worker=N).
# Required: MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD, SWEEPER_OPTUNA_STORAGE.
# Optional: SWEEP (dropout); extra arguments are passed on as Hydra overrides.
set -eu
exec python -m sweeper "+sweep=${SWEEP:-dropout}" tracking=server "$@"
