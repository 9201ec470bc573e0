#!/usr/bin/env bash
# Installs the peer's dependencies (exactly the lock file's) and starts it: start.sh PORT
set -euo pipefail
cd "$(dirname "$0")"
command -v node >/dev/null || { echo "error: node is not installed (apt-get install nodejs npm)" >&2; exit 1; }
[ -d node_modules/ws ] || npm ci --silent --no-audit --no-fund >&2
exec node server.js "${1:-8081}"
