#!/usr/bin/env bash
# Makes sure the backends the tests and the local run need are up on 127.0.0.1:
# the MongoDB-compatible surrogate (27017), Redis (6379) and RabbitMQ (5672).
# Installs what is missing (Debian packages, a pinned PyPI package in a cached venv)
# and starts only what is not running. PIDs of what it started go to $TODO_STATE/*.pid
# so `ci/backends.sh stop` stops exactly those, never anything by name.
# Not root (GitHub's runners, a developer's machine): packages and the RabbitMQ CLI go
# through sudo (ci/lib.sh), Redis keeps its files under $TODO_STATE/redis, and
# $TODO_STATE/bin gets a `rabbitmqctl` that runs through sudo, for the tests that stop
# the broker (ci/test.sh puts it on PATH).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TODO_STATE="${TODO_STATE:-$HOME/.cache/todo-system}"
# renovate: datasource=pypi depName=secantusdb
SECANTUS_VERSION="0.7.0b3"
SECANTUS_VENV="$TODO_STATE/secantus-venv"
mkdir -p "$TODO_STATE"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port seconds name
  for _ in $(seq 1 $(($2 * 10))); do port_open "$1" && return 0; sleep 0.1; done
  echo "backends: $3 did not open port $1 within $2 s" >&2
  return 1
}

start_mongodb() {
  if port_open 27017; then echo "backends: MongoDB-compatible server already on 27017"; return; fi
  if [ ! -x "$SECANTUS_VENV/bin/secantusd-py" ]; then
    echo "backends: installing secantusdb==$SECANTUS_VERSION into $SECANTUS_VENV"
    python3 -m venv "$SECANTUS_VENV"
    "$SECANTUS_VENV/bin/pip" install -q "secantusdb==$SECANTUS_VERSION"
  fi
  nohup "$SECANTUS_VENV/bin/secantusd-py" --host 127.0.0.1 --port 27017 --storage-path :memory: \
    >"$TODO_STATE/secantus.log" 2>&1 &
  echo $! >"$TODO_STATE/secantus.pid"
  wait_port 27017 30 "secantusd"
  echo "backends: started the MongoDB surrogate (pid $(cat "$TODO_STATE/secantus.pid"))"
}

start_redis() {
  if port_open 6379; then echo "backends: Redis already on 6379"; return; fi
  command -v redis-server >/dev/null || apt_install redis-server
  local dir=/var/lib/redis log=/var/log/redis
  # Without root, /var is not ours: keep Redis's files with the rest of the state.
  [[ "$(id -u)" == 0 ]] || { dir="$TODO_STATE/redis"; log="$TODO_STATE/redis"; }
  mkdir -p "$dir" "$log"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir "$dir" --logfile "$log/ci.log" --pidfile "$TODO_STATE/redis.pid"
  wait_port 6379 30 "redis"
  echo "backends: started Redis"
}

# Debian's rabbitmqctl and rabbitmq-server refuse anyone but root and the rabbitmq user.
rabbitmq_cli_for_tests() {
  [[ "$(id -u)" != 0 ]] || return 0
  local shim="$TODO_STATE/bin/rabbitmqctl" real=/usr/sbin/rabbitmqctl
  [[ -x "$real" ]] || real="$(command -v rabbitmqctl)" || return 0
  [[ "$real" != "$shim" ]] || return 0
  mkdir -p "$TODO_STATE/bin"
  printf '#!/bin/sh\n# Written by ci/backends.sh: %s refuses non-root users.\nexec sudo -n %s "$@"\n' \
    "$real" "$real" >"$shim"
  chmod +x "$shim"
}

# A broker that survived a full disk can listen without its default vhost: recreate it.
ensure_rabbitmq_vhost() {
  if ! as_root timeout 60 rabbitmqctl -q list_vhosts 2>/dev/null | grep -qx '/'; then
    echo "backends: RabbitMQ has no default vhost; recreating it"
    as_root timeout 60 rabbitmqctl -q add_vhost / || true
    as_root timeout 60 rabbitmqctl -q set_permissions -p / guest '.*' '.*' '.*' || true
  fi
}

start_rabbitmq() {
  if port_open 5672; then
    echo "backends: RabbitMQ already on 5672"; rabbitmq_cli_for_tests; ensure_rabbitmq_vhost; return
  fi
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  rabbitmq_cli_for_tests
  # A node whose app a failed test stopped only needs its app started again.
  if as_root timeout 20 rabbitmqctl -q status >/dev/null 2>&1; then
    as_root rabbitmqctl -q start_app
  else
    as_root rabbitmq-server -detached
    echo started >"$TODO_STATE/rabbitmq.started"
  fi
  wait_port 5672 90 "rabbitmq"
  as_root timeout 60 rabbitmqctl -q await_startup >/dev/null 2>&1 || true
  ensure_rabbitmq_vhost
  echo "backends: started RabbitMQ"
}

stop_started() {
  for name in secantus redis; do
    pidfile="$TODO_STATE/$name.pid"
    if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; rm -f "$pidfile"; fi
  done
  if [ -f "$TODO_STATE/rabbitmq.started" ]; then as_root rabbitmqctl -q stop >/dev/null 2>&1 || true; rm -f "$TODO_STATE/rabbitmq.started"; fi
}

case "${1:-up}" in
  up) start_mongodb; start_redis; start_rabbitmq ;;
  stop) stop_started ;;
  *) echo "usage: ci/backends.sh [up|stop]" >&2; exit 2 ;;
esac
