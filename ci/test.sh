#!/usr/bin/env bash
# The test command: starts the backends the tests need (what is not running
# already), runs every test of the workspace against them, runs the services' contract
# suites a second time on the embedded backends, then stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/todo-system/target}"

bash ci/backends.sh up
trap 'bash ci/backends.sh stop' EXIT
# Not root: the tests that stop the broker find the sudo `rabbitmqctl` ci/backends.sh wrote.
[[ "$(id -u)" == 0 ]] || export PATH="${TODO_STATE:-$HOME/.cache/todo-system}/bin:$PATH"
status=0
cargo test --workspace --locked --no-fail-fast "$@" || status=$?
echo "=== the services' contract suites on the embedded backends (TEST_BACKEND=embedded)"
TEST_BACKEND=embedded cargo test --locked --no-fail-fast -p svc-users -p svc-tasks -p svc-notify --test api "$@" || status=$?
exit $status
