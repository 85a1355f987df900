#!/usr/bin/env bash
# Headless Chromium loads a page from an allowlisted origin that creates and lists
# tasks through the edge with a bearer token (a preflighted request) and succeeds; the
# same page from another origin is blocked by the browser.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/todo-system/target}"
bash ci/install-test-tools.sh >/dev/null
bash ci/backends.sh up
trap 'bash ci/backends.sh stop' EXIT
cargo build --locked --quiet --bins
REQUIRE_TEST_TOOLS=1 cargo test --locked -p todo-e2e --test hostile -- --exact --include-ignored \
  tools::a_browser_calls_the_api_from_an_allowlisted_origin_and_is_blocked_from_another --nocapture
