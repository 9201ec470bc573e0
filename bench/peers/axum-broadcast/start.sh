#!/usr/bin/env bash
# Builds the peer in release mode (its own project, outside the root workspace) and starts it:
# start.sh PORT
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --quiet >&2
exec ./target/release/peer-axum-broadcast "${1:-8082}"
