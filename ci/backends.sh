#!/usr/bin/env bash
# Makes sure the backends the tests and the local run need are up on 127.0.0.1:
# the MongoDB-compatible surrogate (27017), Redis (6379) and RabbitMQ (5672).
# Installs what is missing (Debian packages, a pinned PyPI package in a cached venv)
# and starts only what is not running. PIDs of what it started go to $TODO_STATE/*.pid
# so `ci/backends.sh stop` stops exactly those, never anything by name.
set -euo pipefail

TODO_STATE="${TODO_STATE:-$HOME/.cache/todo-system}"
SECANTUS_VERSION="0.7.0b3"
SECANTUS_VENV="$TODO_STATE/secantus-venv"
mkdir -p "$TODO_STATE"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port seconds name
  for _ in $(seq 1 $(($2 * 10))); do port_open "$1" && return 0; sleep 0.1; done
  echo "backends: $3 did not open port $1 within $2 s" >&2
  return 1
}

apt_install() {
  if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq >/dev/null; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
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
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log --pidfile "$TODO_STATE/redis.pid"
  wait_port 6379 30 "redis"
  echo "backends: started Redis"
}

# A broker that survived a full disk can listen without its default vhost: recreate it.
ensure_rabbitmq_vhost() {
  if ! timeout 60 rabbitmqctl -q list_vhosts 2>/dev/null | grep -qx '/'; then
    echo "backends: RabbitMQ has no default vhost; recreating it"
    timeout 60 rabbitmqctl -q add_vhost / || true
    timeout 60 rabbitmqctl -q set_permissions -p / guest '.*' '.*' '.*' || true
  fi
}

start_rabbitmq() {
  if port_open 5672; then echo "backends: RabbitMQ already on 5672"; ensure_rabbitmq_vhost; return; fi
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  # A node whose app a failed test stopped only needs its app started again.
  if timeout 20 rabbitmqctl -q status >/dev/null 2>&1; then
    rabbitmqctl -q start_app
  else
    rabbitmq-server -detached
    echo started >"$TODO_STATE/rabbitmq.started"
  fi
  wait_port 5672 90 "rabbitmq"
  timeout 60 rabbitmqctl -q await_startup >/dev/null 2>&1 || true
  ensure_rabbitmq_vhost
  echo "backends: started RabbitMQ"
}

stop_started() {
  for name in secantus redis; do
    pidfile="$TODO_STATE/$name.pid"
    if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; rm -f "$pidfile"; fi
  done
  if [ -f "$TODO_STATE/rabbitmq.started" ]; then rabbitmqctl -q stop >/dev/null 2>&1 || true; rm -f "$TODO_STATE/rabbitmq.started"; fi
}

case "${1:-up}" in
  up) start_mongodb; start_redis; start_rabbitmq ;;
  stop) stop_started ;;
  *) echo "usage: ci/backends.sh [up|stop]" >&2; exit 2 ;;
esac
