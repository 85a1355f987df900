#!/usr/bin/env bash
# Runs the whole system on this machine: the backends (started only if not running),
# the three services and the edge, with demo users seeded. Tokens are EdDSA, as deployed:
# svc-users signs with a key made on first run ($STATE/jwt-signing.pem, mode 0600), the
# edge, svc-tasks and svc-notify check tokens against its JWK Set.
# Ctrl-C stops the processes it started (by PID) and the backends it started.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/todo-system/target}"
STATE="${TODO_STATE:-$HOME/.cache/todo-system}"
LOGS="$STATE/logs"
mkdir -p "$LOGS"

if ! command -v cmake >/dev/null; then
  source ci/lib.sh # as root, or through sudo
  apt_install cmake
fi
bash ci/backends.sh up
echo "building (the first build takes a few minutes)…"
cargo build --locked --bins --quiet
BIN="$CARGO_TARGET_DIR/debug"

# No development mode, no shared secret: only svc-users holds a key. Token settings from
# the caller's environment would clash with these (a process given both modes refuses).
unset TODO_DEV_MODE JWT_SECRET JWT_PREVIOUS_KEYS JWT_SIGNING_KEY JWT_PREVIOUS_PUBLIC_KEYS JWT_JWKS_URL
export RUST_LOG="${RUST_LOG:-info}"
SIGNING_KEY="$STATE/jwt-signing.pem"
# Creates the key unless it exists (kept: tokens survive a restart); prints its public key.
"$BIN/svc-users" --generate-signing-key "$SIGNING_KEY" >"$STATE/jwt-signing.pub.pem"
JWKS_URL=http://127.0.0.1:8081/.well-known/jwks.json
JWT_SIGNING_KEY="$SIGNING_KEY" "$BIN/svc-users" --seed >>"$LOGS/seed.log"

pids=()
stop() {
  trap - INT TERM EXIT
  echo; echo "stopping…"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  bash ci/backends.sh stop
}
trap stop INT TERM EXIT

JWT_SIGNING_KEY="$SIGNING_KEY" "$BIN/svc-users" >>"$LOGS/svc-users.log" 2>&1 &
pids+=($!)
# The verifiers load svc-users' JWK Set before they report ready: start them once it answers.
for _ in $(seq 1 100); do
  curl -fs "$JWKS_URL" >/dev/null 2>&1 && break
  sleep 0.2
done
for svc in svc-tasks svc-notify; do
  JWT_JWKS_URL="$JWKS_URL" "$BIN/$svc" >>"$LOGS/$svc.log" 2>&1 &
  pids+=($!)
done
# Plain HTTP unless the caller passes EDGE_TLS_CERT and EDGE_TLS_KEY (README: TLS).
export EDGE_ADMIN_ADDR="${EDGE_ADMIN_ADDR:-127.0.0.1:9901}"
if [[ -n "${EDGE_TLS_CERT:-}" ]]; then
  API=https://127.0.0.1:8080 CURL="curl --cacert $EDGE_TLS_CERT"
else
  API=http://127.0.0.1:8080 CURL=curl
fi
export API
JWT_JWKS_URL="$JWKS_URL" POLICY_DIR=policies "$BIN/edge" >>"$LOGS/edge.log" 2>&1 &
pids+=($!)

# Readiness is on the edge's admin listener.
for _ in $(seq 1 100); do
  curl -fs "http://$EDGE_ADMIN_ADDR/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done

# A few demo tasks for alice, through the API, only when she has none yet.
python3 - <<'PY' || echo "(demo tasks not created)"
import json, os, ssl, urllib.request
api = os.environ["API"]
tls = ssl.create_default_context(cafile=os.environ["EDGE_TLS_CERT"]) if api.startswith("https") else None
def call(method, path, body=None, token=None):
    req = urllib.request.Request(api + path, method=method, data=json.dumps(body).encode() if body else None)
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=10, context=tls) as resp:
        return json.load(resp) if resp.status != 204 else None
token = call("POST", "/users/login", {"email": "alice@example.com", "password": "alice-demo-password"})["accessToken"]
if not call("GET", "/tasks", token=token)["items"]:
    for title, priority in [("Buy milk", "high"), ("Book the dentist", "normal"), ("Read the Pingora docs", "low")]:
        call("POST", "/tasks", {"title": title, "priority": priority}, token)
PY

cat <<INFO

The to-do API is up at $API  (logs: $LOGS)
Metrics and readiness: http://$EDGE_ADMIN_ADDR/metrics, http://$EDGE_ADMIN_ADDR/readyz
Tokens: EdDSA, signed with $SIGNING_KEY; public keys at $API/.well-known/jwks.json
Demo users: alice@example.com / alice-demo-password, bob@example.com / bob-demo-password
Try:
  $CURL -s -X POST $API/users/login -H 'content-type: application/json' \\
       -d '{"email":"alice@example.com","password":"alice-demo-password"}'
Ctrl-C stops everything this script started.
INFO
wait
