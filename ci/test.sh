#!/usr/bin/env bash
# The test command: starts the backends the tests need (what is not running
# already), runs every test of the workspace against them, then stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/todo-system/target}"

bash ci/backends.sh up
trap 'bash ci/backends.sh stop' EXIT
cargo test --workspace --locked --no-fail-fast "$@"
