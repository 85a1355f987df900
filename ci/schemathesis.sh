#!/usr/bin/env bash
# Schemathesis against openapi.yaml through the real edge (with a valid token) in front
# of the real services: no 5xx, every status code, content type, header and body as
# documented, and protected operations refuse a missing token. Bounded (< 2.5 min).
#   SCHEMATHESIS_MAX_EXAMPLES (default 30 per operation), SCHEMATHESIS_SEED
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/lib.sh
hostile_tool_test tools::schemathesis_finds_no_server_error_and_no_schema_mismatch
