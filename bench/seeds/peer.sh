#!/usr/bin/env bash
# The peer: this directory on serverless-offline, with dynalite holding the table.
#
#   bench/seeds/peer.sh PORT    # WebSocket API on ws://127.0.0.1:PORT, dynalite on PORT+1
#
# The handlers are unchanged; only the environment points them at the local services: the
# SDK reads AWS_ENDPOINT_URL_DYNAMODB and AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI
# (serverless-offline passes every AWS_* variable to the handlers). No AWS account, login or
# network is needed: the credentials are placeholders and the Framework's telemetry is off.
# dynalite runs as a child of this process, so the process tree is the whole peer; stop it by
# its process group.
set -euo pipefail
cd "$(dirname "$0")"
port=$1
dynamodb_port=$((port + 1))
export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_REGION=us-east-1
export AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED=true
export SLS_TELEMETRY_DISABLED=1 SLS_NOTIFICATIONS_MODE=off SLS_DEPRECATION_DISABLE='*'
resolved=$(mktemp) started=$(mktemp)
node node_modules/serverless/bin/serverless.js print --format json >"$resolved"
node dynalite.cjs "$dynamodb_port" "$resolved" >"$started" &
for _ in $(seq 1 300); do
  grep -q '^listening' "$started" && break
  kill -0 $! 2>/dev/null || { echo "dynalite did not start" >&2; exit 1; }
  sleep 0.1
done
cat "$started"
rm -f "$resolved" "$started"
export AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$dynamodb_port"
export AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI="http://127.0.0.1:$port"
exec node node_modules/serverless/bin/serverless.js offline start --host 127.0.0.1 \
  --websocketPort "$port" --httpPort "$((port + 2))" --lambdaPort "$((port + 3))"
