#!/usr/bin/env bash
# Builds the fuzz targets in fuzz/ with libFuzzer's coverage instrumentation (stable Rust, no
# cargo-fuzz needed) and runs each for SECONDS (default 60). Fails on the first crash; the input
# that crashed is saved under target/fuzz/artifacts/<target>/.
set -euo pipefail
secs=${1:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
host=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
cargo build --quiet --release --bins --manifest-path "$root/fuzz/Cargo.toml" \
  --target "$host" --target-dir "$root/target/fuzz"
for target in selection frames management_path chat_protocol; do
  corpus="$root/target/fuzz/corpus/$target"
  artifacts="$root/target/fuzz/artifacts/$target"
  mkdir -p "$corpus" "$artifacts"
  echo "fuzzing $target for ${secs}s"
  "$root/target/fuzz/$host/release/$target" -max_total_time="$secs" -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "$corpus" "$root/fuzz/seeds/$target" 2>&1 |
    grep -E '^(stat::number_of_executed_units|stat::new_units_added|==|SUMMARY|Done)' || true
  # libFuzzer exits non-zero on a crash; PIPESTATUS keeps that visible through grep.
  status=${PIPESTATUS[0]}
  if [ "$status" -ne 0 ]; then
    echo "fuzz target $target failed (exit $status); crashing input in $artifacts" >&2
    exit "$status"
  fi
done
