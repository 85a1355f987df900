#!/usr/bin/env bash
# A bounded soak: mixed traffic through the edge for [seconds] (default 60), then
# throughput, errors, latency and every process's RSS at start and end.
#   bash ci/soak.sh 300       # five minutes by hand
#   SOAK_WORKERS=16 bash ci/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/todo-system/target}"
export SOAK_SECONDS="${1:-${SOAK_SECONDS:-60}}"
bash ci/backends.sh up
trap 'bash ci/backends.sh stop' EXIT
cargo build --locked --quiet --bins
cargo test --locked -p todo-e2e --test soak -- --ignored --nocapture
