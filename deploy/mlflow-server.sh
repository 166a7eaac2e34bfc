#!/bin/sh
# The MLflow tracking server exactly as docker compose's `mlflow` service runs it (the native tests
# run this same script). PostgreSQL backend store, proxied artifacts, basic auth, host/CORS checks.
# Required: MLFLOW_BACKEND_STORE_URI, MLFLOW_AUTH_DB_URI, MLFLOW_ARTIFACTS_DESTINATION,
#           MLFLOW_ADMIN_USERNAME, MLFLOW_ADMIN_PASSWORD, MLFLOW_FLASK_SERVER_SECRET_KEY (CSRF key of the auth app)
# Optional: MLFLOW_HOST (0.0.0.0), MLFLOW_PORT (5000), MLFLOW_ALLOWED_HOSTS, MLFLOW_CORS_ALLOWED_ORIGINS,
#           MLFLOW_AUTH_CONFIG_PATH (where the generated auth config goes; mode 600)
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
INI
export MLFLOW_AUTH_CONFIG_PATH="$conf"
exec mlflow server \
  --app-name basic-auth \
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
  --serve-artifacts --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" \
  --host "${MLFLOW_HOST:-0.0.0.0}" --port "$port" \
  --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-localhost,localhost:$port,127.0.0.1,127.0.0.1:$port,mlflow,mlflow:$port}" \
  --cors-allowed-origins "${MLFLOW_CORS_ALLOWED_ORIGINS:-http://localhost:$port,http://127.0.0.1:$port}"
