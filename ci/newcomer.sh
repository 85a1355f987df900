#!/usr/bin/env bash
# The newcomer's path, checked: a fresh clone of this checkout's HEAD (committed work
# only), the README's first command there (scripts/quickstart.sh, debug profile to
# save build time), then the API through the edge: GET /healthz, POST /users/register,
# POST /users/login and an authenticated GET /tasks. Stops what it started by its PID
# and removes the clone and the data. Run by .ci/run.
#
#   bash ci/newcomer.sh      NEWCOMER_TIMEOUT (default 900 s) bounds the build and start.
#
# CARGO_TARGET_DIR, when set (.ci/run sets it), is shared so the third-party crates
# the tests compiled are reused.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
limit="${NEWCOMER_TIMEOUT:-900}"
work="$(mktemp -d)"
pid=""

log() { printf '[newcomer %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

stop() {
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    log "stopping todo-standalone (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  fi
  # The process group it led (setsid below): cargo's compilers if stopped mid-build.
  if [[ -n "$pid" ]]; then kill -KILL -- "-$pid" 2>/dev/null || true; fi
  pid=""
}
cleanup() {
  stop
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
  log "FAILED: $*"
  echo "---- last lines of the quickstart output ($work/quickstart.log):" >&2
  tail -n 60 "$work/quickstart.log" >&2 || true
  exit 1
}

commit="$(git -C "$root" rev-parse HEAD)"
log "cloning $root at $commit"
git clone --quiet --no-local --no-checkout "$root" "$work/todo"
# HEAD itself, even when detached (CI checks out a merge commit) or not on a branch.
git -C "$work/todo" fetch --quiet origin HEAD
git -C "$work/todo" checkout --quiet --detach FETCH_HEAD

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
api="http://127.0.0.1:$port"
log "QUICKSTART_PROFILE=dev bash scripts/quickstart.sh (API on $api, data in $work/data)"
# A new session, so that the process and anything it started can be stopped together.
session=()
command -v setsid >/dev/null && session=(setsid)
(
  cd "$work/todo"
  exec "${session[@]}" env QUICKSTART_PROFILE=dev LISTEN_ADDR="127.0.0.1:$port" TODO_DATA_DIR="$work/data" \
    TODO_USERS_ADDR=127.0.0.1:0 TODO_TASKS_ADDR=127.0.0.1:0 TODO_NOTIFY_ADDR=127.0.0.1:0 \
    bash scripts/quickstart.sh </dev/null
) >"$work/quickstart.log" 2>&1 &
pid=$!

# Bounded wait for /healthz, then the first calls a client makes.
python3 - "$api" "$pid" "$limit" <<'PY' || fail "the API did not answer as expected (above)"
import json
import sys
import time
import urllib.error
import urllib.request
import uuid

api, pid, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])


def call(method, path, body=None, token=None, timeout=60):
    request = urllib.request.Request(api + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
    request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


started = time.monotonic()
while True:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            exited = stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        exited = True
    if exited:
        sys.exit("newcomer: quickstart exited before the API answered")
    try:
        if call("GET", "/healthz", timeout=2)[0] == 200:
            break
    except OSError:
        pass
    if time.monotonic() - started > limit:
        sys.exit(f"newcomer: no 200 from GET /healthz within {limit:.0f} s")
    time.sleep(1)
print(f"newcomer: GET /healthz 200 after {time.monotonic() - started:.0f} s", flush=True)

email = f"newcomer-{uuid.uuid4().hex[:12]}@example.com"
password = "newcomer-" + uuid.uuid4().hex
status, body = call("POST", "/users/register", {"email": email, "password": password, "name": "Newcomer"})
if status != 201:
    sys.exit(f"newcomer: POST /users/register answered {status}: {body[:500]!r}")
status, body = call("POST", "/users/login", {"email": email, "password": password})
if status != 200:
    sys.exit(f"newcomer: POST /users/login answered {status}: {body[:500]!r}")
token = json.loads(body).get("accessToken")
if not token:
    sys.exit(f"newcomer: the login answer has no accessToken: {body[:500]!r}")
status, body = call("GET", "/tasks", token=token)
if status != 200:
    sys.exit(f"newcomer: GET /tasks with the new token answered {status}: {body[:500]!r}")
print("newcomer: register 201, login 200, GET /tasks 200 through the edge", flush=True)
PY

stop
log "passed: a fresh clone runs with the README's first command"
