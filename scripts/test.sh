#!/usr/bin/env bash
# Installs what the tests need (system packages, Node and Python clients) and runs every test.
# Safe to run again: each step skips what is already there. Run as root on Debian.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

if ! command -v cargo >/dev/null; then
  echo "error: cargo not found; install a Rust toolchain (1.88 or newer) first" >&2
  exit 1
fi

# System packages the tests drive for real.
apt_needed=()
command -v curl >/dev/null || apt_needed+=(curl)   # the shell bootstrap example's runtime client
command -v node >/dev/null || apt_needed+=(nodejs npm)
command -v python3 >/dev/null || apt_needed+=(python3 python3-pip)
command -v redis-server >/dev/null || apt_needed+=(redis-server)
command -v nginx >/dev/null || apt_needed+=(nginx-light)
# The browser tests drive Debian's chromium (never a downloaded browser build).
[[ -x /usr/bin/chromium ]] || apt_needed+=(chromium)
if ((${#apt_needed[@]})); then
  log "installing ${apt_needed[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${apt_needed[@]}" >/dev/null
fi

# Real clients: wscat (Node), the AWS CLI and boto3 (Python).
if ! command -v wscat >/dev/null; then
  log "installing wscat"
  npm install -g --silent wscat@6 >/dev/null
fi
if ! command -v aws >/dev/null || ! python3 -c 'import boto3' 2>/dev/null; then
  log "installing awscli and boto3"
  python3 -m pip install --quiet awscli boto3
fi

# The DynamoDB differential test runs moto's server.
if ! python3 -c 'import moto.server, flask' 2>/dev/null; then
  log "installing moto[server]"
  python3 -m pip install --quiet 'moto[server]'
fi

if ! command -v kosoku >/dev/null; then
  log "installing kosoku (the Autobahn TestSuite runner)"
  python3 -m pip install --quiet kosoku
fi

# Fuzz first so that the test runner's summary closes the output.
log "fuzzing each parser for ${FUZZ_SECONDS:=15}s"
fuzz_status=0
./scripts/fuzz.sh "$FUZZ_SECONDS" || fuzz_status=$?

# The browser tests' driver, from the lock file.
if [[ ! -d tests/browser/node_modules/playwright-core ]]; then
  log "installing playwright-core for the browser tests"
  (cd tests/browser && npm ci --silent --no-audit --no-fund)
fi

# The JavaScript SDKs (v3 and v2) the DynamoDB tests drive, from the lock file.
if [[ ! -d tests/dynamodb/node_modules/@aws-sdk/lib-dynamodb || ! -d tests/dynamodb/node_modules/aws-sdk ]]; then
  log "installing the JavaScript SDKs for the DynamoDB tests"
  (cd tests/dynamodb && npm ci --silent --no-audit --no-fund)
fi
# The sample apps' own dependencies (examples/apps/), from their lock files; the SDKs the
# Lambda runtimes provide are installed by switchboard itself into its data directory.
for lock in examples/apps/*/package-lock.json examples/apps/*/*/package-lock.json; do
  [[ -f "$lock" ]] || continue
  app=$(dirname "$lock")
  if [[ ! -d "$app/node_modules" ]]; then
    log "installing $app's dependencies"
    (cd "$app" && npm ci --silent --no-audit --no-fund)
  fi
done

log "running the tests"
# Then the gateway's and the chat's tests again with connections on two worker threads
# (`workers`), except the two that run on tokio's paused clock, which one runtime owns.
worker_areas='articles bad_input chat gateway inspector limits management observability shutdown tls'
paused='idle_connections_close_with_1001 the_lifetime_limit_closes_with_1001'
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
  log "running the gateway's and the chat's tests with connections on worker threads"
  SWITCHBOARD_TEST_WORKERS=2 cargo nextest run --test it --no-fail-fast -E \
    "test(/^(${worker_areas// /|})::/) and not test(/${paused// /|}/)"
else
  cargo test --workspace --no-fail-fast
  log "running the gateway's and the chat's tests with connections on worker threads"
  skips=(); for t in $paused; do skips+=(--skip "$t"); done
  # shellcheck disable=SC2086 # one filter per area
  SWITCHBOARD_TEST_WORKERS=2 cargo test --test it --no-fail-fast -- ${worker_areas// /:: }:: "${skips[@]}"
fi
if [ "$fuzz_status" -ne 0 ]; then
  echo "error: fuzzing found a crash (see above)" >&2
  exit "$fuzz_status"
fi
