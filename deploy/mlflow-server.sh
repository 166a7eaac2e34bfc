#!/bin/sh
# The MLflow tracking server exactly as docker compose's `mlflow` service runs it (the native tests
# run this same script). PostgreSQL backend store, proxied artifacts, basic auth, host/CORS checks.
# Required: MLFLOW_BACKEND_STORE_URI, MLFLOW_AUTH_DB_URI, MLFLOW_ARTIFACTS_DESTINATION,
#           MLFLOW_ADMIN_USERNAME, MLFLOW_ADMIN_PASSWORD, MLFLOW_FLASK_SERVER_SECRET_KEY (CSRF key of the auth app)
# Optional: MLFLOW_HOST (0.0.0.0), MLFLOW_PORT (5000), MLFLOW_ALLOWED_HOSTS, MLFLOW_CORS_ALLOWED_ORIGINS,
#           MLFLOW_AUTH_CONFIG_PATH (where the generated auth config goes; mode 600),
#           MLFLOW_AUTH_CACHE_TTL_SECONDS (60: how long a verified password is trusted without re-hashing it; 0 = off),
#           MLFLOW_WORKERS (4: uvicorn worker processes), MLFLOW_EVENT_LOOP (uvloop; asyncio is slower, see README)
set -eu
: "${MLFLOW_BACKEND_STORE_URI:?}" "${MLFLOW_AUTH_DB_URI:?}" "${MLFLOW_ARTIFACTS_DESTINATION:?}"
: "${MLFLOW_ADMIN_USERNAME:?}" "${MLFLOW_ADMIN_PASSWORD:?}" "${MLFLOW_FLASK_SERVER_SECRET_KEY:?}"
port="${MLFLOW_PORT:-5000}"
conf="${MLFLOW_AUTH_CONFIG_PATH:-${TMPDIR:-/tmp}/mlflow-basic-auth.ini}"
umask 077
cat > "$conf" <<INI
[mlflow]
default_permission = READ
database_uri = ${MLFLOW_AUTH_DB_URI}
admin_username = ${MLFLOW_ADMIN_USERNAME}
admin_password = ${MLFLOW_ADMIN_PASSWORD}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
# MLflow's own credential cache: a verified (user, password) skips the PBKDF2 check for this many seconds.
# It holds an HMAC of the password under a per-process random key; password changes and deletions through
# the API apply at once on the process that handled them, and on the others within the TTL.
auth_cache_ttl_seconds = ${MLFLOW_AUTH_CACHE_TTL_SECONDS:-60}
INI
export MLFLOW_AUTH_CONFIG_PATH="$conf"
exec mlflow server \
  --app-name basic-auth \
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
  --serve-artifacts --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" \
  --host "${MLFLOW_HOST:-0.0.0.0}" --port "$port" --workers "${MLFLOW_WORKERS:-4}" \
  --uvicorn-opts "--loop ${MLFLOW_EVENT_LOOP:-uvloop}" \
  --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-localhost,localhost:$port,127.0.0.1,127.0.0.1:$port,mlflow,mlflow:$port}" \
  --cors-allowed-origins "${MLFLOW_CORS_ALLOWED_ORIGINS:-http://localhost:$port,http://127.0.0.1:$port}"
