#!/usr/bin/env bash
# Schemathesis against openapi.yaml through the real edge (with a valid token) in front
# of the real services: no 5xx, every status code, content type, header and body as
# documented, and protected operations refuse a missing token. Bounded (< 2.5 min).
#   SCHEMATHESIS_MAX_EXAMPLES (default 30 per operation), SCHEMATHESIS_SEED
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/todo-system/target}"
bash ci/install-test-tools.sh >/dev/null
bash ci/backends.sh up
trap 'bash ci/backends.sh stop' EXIT
cargo build --locked --quiet --bins
REQUIRE_TEST_TOOLS=1 cargo test --locked -p todo-e2e --test hostile -- --exact --include-ignored \
  tools::schemathesis_finds_no_server_error_and_no_schema_mismatch --nocapture
