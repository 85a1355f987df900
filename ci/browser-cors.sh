#!/usr/bin/env bash
# Headless Chromium loads a page from an allowlisted origin that creates and lists
# tasks through the edge with a bearer token (a preflighted request) and succeeds; the
# same page from another origin is blocked by the browser.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/lib.sh
hostile_tool_test tools::a_browser_calls_the_api_from_an_allowlisted_origin_and_is_blocked_from_another
