#!/usr/bin/env bash
# A local RabbitMQ cluster of N nodes on 127.0.0.1, for the "a broker node dies for
# good" fault scenario (issue 18). Fully separate from the RabbitMQ the tests use on
# 5672 (rabbit@localhost): its own node names, ports, data, logs, pid files and Erlang
# cookie; it shares only epmd (4369), which it never stops. Every node it starts is
# stopped by PID, never by name.
#
#   ci/rabbit-cluster.sh up [N]           start N nodes (default 3, at most 9), cluster them
#                                         and print their AMQP URLs, comma-separated, on
#                                         stdout (the only stdout line). Idempotent: with
#                                         the cluster running it only prints the URLs; with
#                                         some nodes dead it starts those again.
#   ci/rabbit-cluster.sh urls             print the AMQP URLs (cluster must have been `up`)
#   ci/rabbit-cluster.sh pids             one line per node: INDEX NODENAME PID PORT
#                                         (PID is `-` for a node that is not running)
#   ci/rabbit-cluster.sh kill I           SIGKILL node I's Erlang VM (beam.smp) by its PID
#   ci/rabbit-cluster.sh start I          start node I again; it rejoins from its data dir
#   ci/rabbit-cluster.sh leader QUEUE     print the index (1..N) of the node leading the
#                                         quorum queue QUEUE (vhost: RABBIT_CLUSTER_VHOST)
#   ci/rabbit-cluster.sh close-connections I
#                                         close every client connection on node I (the
#                                         node stays up; clients see connection.close 320)
#   ci/rabbit-cluster.sh depth QUEUE      messages (ready and unacknowledged) in QUEUE, asked
#                                         of a live node
#   ci/rabbit-cluster.sh status           cluster_status as seen from a live node
#   ci/rabbit-cluster.sh down             stop every node by PID (SIGTERM, then SIGKILL),
#                                         then remove the cluster's directory
#
# Node I is todo-rabbit-I@localhost, AMQP on 127.0.0.1:(RABBIT_CLUSTER_BASE_PORT + I)
# (5681, 5682, 5683 by default), Erlang distribution on 127.0.0.1:(25680 + I with the
# default base port). Data, logs and pid files live under
# $RABBIT_CLUSTER_DIR (default $TODO_STATE/rabbit-cluster, TODO_STATE defaulting to
# ~/.cache/todo-system). Users: the default guest/guest, which RabbitMQ accepts from
# loopback only, which is all this cluster listens on.
#
# Runs as whoever calls it (root or not: it calls RabbitMQ's own scripts, not Debian's
# root-only wrappers in /usr/sbin). Every wait is bounded; exit status is non-zero,
# with the reason on stderr, when something does not happen in time.
set -euo pipefail

TODO_STATE="${TODO_STATE:-$HOME/.cache/todo-system}"
BASE="${RABBIT_CLUSTER_DIR:-$TODO_STATE/rabbit-cluster}"
BASE_PORT="${RABBIT_CLUSTER_BASE_PORT:-5680}"
DIST_BASE_PORT="$((BASE_PORT + 20000))"
VHOST="${RABBIT_CLUSTER_VHOST:-/}"
NODE_PREFIX="todo-rabbit-"
HOST_PART="localhost"
BOOT_TIMEOUT="${RABBIT_CLUSTER_BOOT_TIMEOUT:-120}" # seconds, per node boot
CLI_TIMEOUT=60                                       # seconds, any one CLI call

log() { printf 'rabbit-cluster: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# RabbitMQ's own scripts (not /usr/sbin's Debian wrappers, which su to the rabbitmq
# user, drop our environment and refuse other users).
find_sbin() {
  local ctl
  if [[ -n "${RABBITMQ_SBIN:-}" ]]; then echo "$RABBITMQ_SBIN"; return; fi
  for ctl in /usr/lib/rabbitmq/bin/rabbitmqctl "$(command -v rabbitmqctl 2>/dev/null || true)"; do
    [[ -n "$ctl" && -e "$ctl" ]] || continue
    ctl="$(readlink -f "$ctl")"
    # Debian's wrapper is a script that execs /usr/lib/rabbitmq/bin/...; skip it.
    if [[ -x "$(dirname "$ctl")/rabbitmq-server" && -x "$(dirname "$ctl")/rabbitmq-env" ]]; then
      dirname "$ctl"; return
    fi
  done
  die "RabbitMQ's scripts not found (install rabbitmq-server, or set RABBITMQ_SBIN)"
}
SBIN=""

node_name() { echo "${NODE_PREFIX}$1@${HOST_PART}"; }
node_dir() { echo "$BASE/node-$1"; }
amqp_port() { echo "$((BASE_PORT + $1))"; }
dist_port() { echo "$((DIST_BASE_PORT + $1))"; }

cluster_size() {
  [[ -f "$BASE/size" ]] || return 1
  cat "$BASE/size"
}

check_index() { # I
  local n
  n="$(cluster_size)" || die "no cluster under $BASE (run: $0 up)"
  [[ "$1" =~ ^[1-9]$ ]] && (("$1" <= n)) || die "node index must be 1..$n, not '$1'"
}

# node_env I: sets NODE_ENV to `env` arguments giving node I's environment (and
# nothing of /etc/rabbitmq, whose files are the default node's).
node_env() {
  local i="$1" d
  d="$(node_dir "$i")"
  NODE_ENV=(-u NOTIFY_SOCKET -u RABBITMQ_ALLOW_INPUT -u ERL_FLAGS -u ERL_AFLAGS -u ERL_ZFLAGS
    -u RABBITMQ_NODE_PORT -u RABBITMQ_NODE_IP_ADDRESS -u RABBITMQ_ENV_LOADED
    HOME="$BASE/home"
    RABBITMQ_NODENAME="$(node_name "$i")"
    RABBITMQ_CONF_ENV_FILE="$d/rabbitmq-env.conf"
    RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf"
    RABBITMQ_ADVANCED_CONFIG_FILE="$d/advanced.config"
    RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins"
    RABBITMQ_MNESIA_BASE="$d/mnesia"
    RABBITMQ_LOG_BASE="$d/log"
    RABBITMQ_PID_FILE="$d/beam.pid"
    RABBITMQ_DIST_PORT="$(dist_port "$i")"
    ERL_EPMD_ADDRESS=127.0.0.1
    ERL_CRASH_DUMP="$d/erl_crash.dump"
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}")
}

# run_as_node I CMD...: CMD with node I's environment.
run_as_node() {
  local i="$1"
  shift
  node_env "$i"
  env "${NODE_ENV[@]}" "$@"
}

# ctl I CMD...: rabbitmqctl against node I, bounded.
ctl() {
  local i="$1"
  shift
  run_as_node "$i" timeout -k 5 "$CLI_TIMEOUT" "$SBIN/rabbitmqctl" -n "$(node_name "$i")" "$@"
}

# beam_pid I: node I's beam.smp PID, if that process is alive and really is node I
# (its environment names node I and its data dir: a stale pid file after a SIGKILL, or
# a PID reused by something else, does not count).
beam_pid() {
  local i="$1" d pid
  d="$(node_dir "$i")"
  [[ -s "$d/beam.pid" ]] || return 1
  pid="$(tr -dc '0-9' <"$d/beam.pid")"
  [[ -n "$pid" && -r "/proc/$pid/environ" ]] || return 1
  [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == beam.smp ]] || return 1
  tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ" | grep -qxF "RABBITMQ_MNESIA_BASE=$d/mnesia" || return 1
  tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ" | grep -qxF "RABBITMQ_NODENAME=$(node_name "$i")" || return 1
  echo "$pid"
}

# pid_alive PID: the process exists and is not a zombie (a zombie is dead for our
# purpose: it only waits for its parent to reap it).
pid_alive() {
  local st
  st="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
  [[ -n "$st" && "$st" != Z && "$st" != X ]]
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

urls() {
  local n i out=""
  n="$(cluster_size)" || die "no cluster under $BASE (run: $0 up)"
  for i in $(seq 1 "$n"); do
    out+="${out:+,}amqp://guest:guest@127.0.0.1:$(amqp_port "$i")/%2f"
  done
  echo "$out"
}

write_node_files() { # I
  local i="$1" d
  d="$(node_dir "$i")"
  mkdir -p "$d/mnesia" "$d/log"
  # Keeps /etc/rabbitmq/rabbitmq-env.conf (the default node's NODENAME) out.
  echo "# ci/rabbit-cluster.sh: everything is in the environment" >"$d/rabbitmq-env.conf"
  echo "[]." >"$d/enabled_plugins"
  cat >"$d/rabbitmq.conf" <<EOF
# ci/rabbit-cluster.sh node $i (not /etc/rabbitmq/rabbitmq.conf, which is the default node's)
listeners.tcp.local = 127.0.0.1:$(amqp_port "$i")
loopback_users.guest = true
log.file.level = info
log.console = false
EOF
}

# launch I: starts node I in the background, in its own session (a caller's Ctrl-C or
# process-group kill does not reach it), and waits for its pid file.
launch() {
  local i="$1" d p
  d="$(node_dir "$i")"
  for p in "$(amqp_port "$i")" "$(dist_port "$i")"; do
    port_open "$p" && die "port $p is already in use (node $i): $(ss -ltnp 2>/dev/null | grep ":$p " || true)"
  done
  rm -f "$d/beam.pid"
  echo "=== $(date -u +%FT%TZ) start" >>"$d/console.log"
  (
    # Only stdin/stdout/stderr (redirected) reach the node: a caller's pipe left open
    # in a long-lived child would keep, say, Rust's Command::output() waiting for EOF.
    for fd in /proc/self/fd/*; do
      fd="${fd##*/}"
      if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    exec </dev/null >>"$d/console.log" 2>&1
    cd "$d"
    node_env "$i"
    exec setsid nohup env "${NODE_ENV[@]}" "$SBIN/rabbitmq-server"
  ) &
  echo $! >"$d/wrapper.pid"
}

wait_pid_file() { # I
  local i="$1" t
  for t in $(seq 1 $((BOOT_TIMEOUT * 5))); do
    beam_pid "$i" >/dev/null && return 0
    if ! kill -0 "$(cat "$(node_dir "$i")/wrapper.pid")" 2>/dev/null; then
      log "node $i exited while starting; its console output and log:"
      tail -n 20 "$(node_dir "$i")/console.log" >&2 || true
      tail -n 20 "$(node_dir "$i")/log/$(node_name "$i").log" >&2 2>/dev/null || true
      return 1
    fi
    sleep 0.2
  done
  log "node $i wrote no pid file within ${BOOT_TIMEOUT}s"
  return 1
}

# await_app I: waits (bounded) until RabbitMQ runs on node I and its AMQP port answers.
await_app() {
  local i="$1" deadline=$((SECONDS + BOOT_TIMEOUT))
  wait_pid_file "$i" || return 1
  while ((SECONDS < deadline)); do
    beam_pid "$i" >/dev/null || { log "node $i died while booting (see $(node_dir "$i")/log)"; return 1; }
    if port_open "$(amqp_port "$i")" &&
      ctl "$i" -q await_startup >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.5
  done
  log "node $i did not finish booting within ${BOOT_TIMEOUT}s; last log lines:"
  tail -n 20 "$(node_dir "$i")/log/$(node_name "$i").log" >&2 2>/dev/null || true
  return 1
}

# running_members I: the nodes node I reports as running, one a line.
running_members() {
  ctl "$1" -q cluster_status --formatter json 2>/dev/null |
    python3 -c 'import json,sys; print("\n".join(json.load(sys.stdin).get("running_nodes", [])))'
}

wait_cluster() { # N
  local n="$1" deadline=$((SECONDS + BOOT_TIMEOUT)) count
  while ((SECONDS < deadline)); do
    count="$(running_members 1 2>/dev/null | grep -c "^${NODE_PREFIX}" || true)"
    [[ "$count" == "$n" ]] && return 0
    sleep 1
  done
  log "cluster_status on node 1 does not show $n running nodes within ${BOOT_TIMEOUT}s:"
  ctl 1 cluster_status >&2 || true
  return 1
}

ensure_user() {
  # A fresh node 1 creates guest/guest (administrator, all permissions on /); the
  # others take node 1's users when they join. Only recreate what is missing.
  if ! ctl 1 -q list_users --no-table-headers 2>/dev/null | grep -q '^guest[[:space:]]'; then
    log "creating user guest"
    ctl 1 -q add_user guest guest >/dev/null
    ctl 1 -q set_user_tags guest administrator >/dev/null
  fi
  if ! ctl 1 -q list_vhosts --no-table-headers 2>/dev/null | grep -qxF "$VHOST"; then
    ctl 1 -q add_vhost "$VHOST" >/dev/null
  fi
  ctl 1 -q set_permissions -p "$VHOST" guest '.*' '.*' '.*' >/dev/null
}

cmd_up() {
  local n="${1:-3}" i running=0 started=() t0=$SECONDS
  [[ "$n" =~ ^[1-9]$ ]] || die "N must be 1..9, not '$n'"
  if [[ -f "$BASE/size" ]]; then
    local have
    have="$(cluster_size)"
    [[ "$have" == "$n" ]] || die "a cluster of $have nodes exists under $BASE; run '$0 down' first"
    for i in $(seq 1 "$n"); do beam_pid "$i" >/dev/null && running=$((running + 1)); done
    if ((running == n)) && [[ "$(running_members 1 2>/dev/null | grep -c "^${NODE_PREFIX}" || true)" == "$n" ]]; then
      urls
      return 0
    fi
    log "$running of $n nodes running; starting the others"
    for i in $(seq 1 "$n"); do
      beam_pid "$i" >/dev/null || { launch "$i"; started+=("$i"); }
    done
    for i in "${started[@]}"; do await_app "$i" || die "node $i did not come back"; done
    wait_cluster "$n" || die "cluster did not re-form"
    urls
    return 0
  fi

  for i in $(seq 1 "$n"); do
    port_open "$(amqp_port "$i")" && die "port $(amqp_port "$i") is in use, and not by a cluster under $BASE"
    port_open "$(dist_port "$i")" && die "port $(dist_port "$i") is in use, and not by a cluster under $BASE"
  done
  mkdir -p "$BASE/home"
  chmod 700 "$BASE" "$BASE/home"
  # One cookie for the whole cluster (and its CLI calls), not the default node's.
  if [[ ! -s "$BASE/home/.erlang.cookie" ]]; then
    (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -dc 'a-f0-9' | tr 'a-f' 'A-F' >"$BASE/home/.erlang.cookie")
    chmod 400 "$BASE/home/.erlang.cookie"
  fi
  echo "$n" >"$BASE/size"
  for i in $(seq 1 "$n"); do write_node_files "$i"; done
  log "starting $n nodes under $BASE"
  for i in $(seq 1 "$n"); do launch "$i"; done
  for i in $(seq 1 "$n"); do
    await_app "$i" || die "node $i did not start (run '$0 down' to clean up)"
  done
  log "nodes booted after $((SECONDS - t0))s; joining 2..$n to $(node_name 1)"
  for i in $(seq 2 "$n"); do
    # join_cluster logs harmless "Failed to create a tracked connection table" errors
    # on 3.10: keep its output out of the way unless a step fails.
    local step
    for step in stop_app "join_cluster $(node_name 1)" start_app; do
      # shellcheck disable=SC2086 # step holds a command and its argument
      ctl "$i" -q $step >"$BASE/join.out" 2>&1 || {
        cat "$BASE/join.out" >&2
        die "node $i: rabbitmqctl $step failed (run '$0 down' to clean up)"
      }
    done
  done
  wait_cluster "$n" || die "cluster did not form (run '$0 down' to clean up)"
  ensure_user
  log "cluster of $n nodes up after $((SECONDS - t0))s"
  urls
}

cmd_pids() {
  local n i pid
  n="$(cluster_size)" || die "no cluster under $BASE (run: $0 up)"
  for i in $(seq 1 "$n"); do
    pid="$(beam_pid "$i" || echo -)"
    echo "$i $(node_name "$i") $pid $(amqp_port "$i")"
  done
}

cmd_kill() {
  local i="$1" pid t
  check_index "$i"
  pid="$(beam_pid "$i")" || die "node $i is not running"
  local t0=$SECONDS
  kill -KILL "$pid"
  for t in $(seq 1 300); do # 30 s
    pid_alive "$pid" || break
    sleep 0.1
  done
  pid_alive "$pid" && die "node $i (pid $pid) still alive 30s after SIGKILL: $(cat "/proc/$pid/status" 2>/dev/null | head -3 | tr '\n' ' ')"
  log "killed node $i ($(node_name "$i"), pid $pid) in $((SECONDS - t0))s"
}

cmd_start() {
  local i="$1" n
  check_index "$i"
  n="$(cluster_size)"
  if beam_pid "$i" >/dev/null; then log "node $i is already running"; return 0; fi
  launch "$i"
  await_app "$i" || die "node $i did not start"
  log "node $i started (pid $(beam_pid "$i"))"
}

# first_live: index of a node whose VM runs (preferring one whose app answers).
first_live() {
  local n i
  n="$(cluster_size)" || die "no cluster under $BASE (run: $0 up)"
  for i in $(seq 1 "$n"); do
    beam_pid "$i" >/dev/null && port_open "$(amqp_port "$i")" && { echo "$i"; return 0; }
  done
  return 1
}

cmd_leader() {
  local q="$1" i out err leader deadline=$((SECONDS + 30))
  while ((SECONDS < deadline)); do
    if i="$(first_live)"; then
      # quorum_status asks the Raft members themselves (the queue record's leader can
      # lag behind an election); the leader with the highest term wins.
      out="$(run_as_node "$i" timeout -k 5 20 "$SBIN/rabbitmq-queues" -n "$(node_name "$i")" \
        -q quorum_status -p "$VHOST" "$q" --formatter json 2>"$BASE/leader.err" || true)"
      err="$(cat "$BASE/leader.err" 2>/dev/null || true)"
      case "$err" in
        *not_found*) die "no queue '$q' in vhost $VHOST" ;;
        *"classic queue"*) die "queue '$q' in vhost $VHOST is a classic queue, not a quorum queue" ;;
      esac
      leader="$(printf '%s' "$out" | python3 -c '
import json, sys
try:
    rows = json.load(sys.stdin)
except ValueError:
    sys.exit(1)
leaders = [r for r in rows if r.get("Raft State") == "leader"]
if leaders:
    print(max(leaders, key=lambda r: r.get("Term") if isinstance(r.get("Term"), int) else -1)["Node Name"])
' 2>/dev/null || true)"
      if [[ "$leader" =~ ^${NODE_PREFIX}([0-9]+)@ ]]; then
        echo "${BASH_REMATCH[1]}"
        return 0
      fi
    fi
    sleep 0.5
  done
  die "no leader for quorum queue '$q' (vhost $VHOST) within 30s: ${err:-${out:-no live node}}"
}

cmd_close_connections() {
  local i="$1"
  check_index "$i"
  beam_pid "$i" >/dev/null || die "node $i is not running"
  ctl "$i" -q close_all_connections --global "closed by ci/rabbit-cluster.sh" >/dev/null ||
    die "close_all_connections on node $i failed"
  log "closed the client connections on node $i"
}

cmd_depth() {
  local q="$1" i
  i="$(first_live)" || die "no node is running"
  ctl "$i" -q list_queues -p "$VHOST" --no-table-headers name messages |
    awk -v q="$q" '$1 == q { print $2; found = 1 } END { exit !found }' || die "no queue '$q' in vhost $VHOST"
}

cmd_status() {
  local i
  i="$(first_live)" || die "no node is running"
  ctl "$i" cluster_status
}

cmd_down() {
  local n i pid pids=() wrappers=() t alive w
  if [[ ! -d "$BASE" ]]; then log "nothing under $BASE"; return 0; fi
  n="$(cluster_size 2>/dev/null || echo 9)"
  for i in $(seq 1 "$n"); do
    if pid="$(beam_pid "$i")"; then
      # SIGTERM: the VM runs init:stop(), RabbitMQ stops gracefully.
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
      log "stopping node $i (pid $pid)"
    fi
    # The rabbitmq-server shell that started the VM (it exits with it).
    w="$(node_dir "$i")/wrapper.pid"
    if [[ -s "$w" ]]; then
      pid="$(cat "$w")"
      tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ" |
        grep -qxF "RABBITMQ_MNESIA_BASE=$(node_dir "$i")/mnesia" && wrappers+=("$pid")
    fi
  done
  for t in $(seq 1 300); do # 30 s
    alive=0
    for pid in ${pids[@]+"${pids[@]}"}; do pid_alive "$pid" && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for pid in ${pids[@]+"${pids[@]}"}; do
    if pid_alive "$pid"; then
      log "pid $pid did not stop within 30s of SIGTERM; SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  for pid in ${pids[@]+"${pids[@]}"} ${wrappers[@]+"${wrappers[@]}"}; do
    for t in $(seq 1 100); do pid_alive "$pid" || break; sleep 0.1; done
    if pid_alive "$pid"; then
      kill -KILL "$pid" 2>/dev/null || true
      sleep 1
      pid_alive "$pid" && die "pid $pid is still alive; not removing $BASE"
    fi
  done
  case "$BASE" in
    */rabbit-cluster | */rabbit-cluster/) rm -rf -- "$BASE" ;;
    *) if [[ -f "$BASE/size" ]]; then rm -rf -- "$BASE"; fi ;;
  esac
  log "down"
}

# One changing command at a time (two tests calling `up` together, say): a lock
# beside the cluster's directory, which `down` removes. Nodes do not inherit it
# (launch closes every descriptor above 2).
lock() {
  mkdir -p "$(dirname "$BASE")"
  exec 9>"$BASE.lock"
  flock -w 300 9 || die "another ci/rabbit-cluster.sh holds $BASE.lock for over 300s"
}

main() {
  local cmd="${1:-}"
  shift || true
  case "$cmd" in
    up | start | kill | down | close-connections) lock ;;
  esac
  case "$cmd" in
    up) SBIN="$(find_sbin)"; cmd_up "$@" ;;
    urls) urls ;;
    pids) cmd_pids ;;
    kill) [[ $# == 1 ]] || die "usage: $0 kill NODE_INDEX"; cmd_kill "$1" ;;
    start) [[ $# == 1 ]] || die "usage: $0 start NODE_INDEX"; SBIN="$(find_sbin)"; cmd_start "$1" ;;
    leader) [[ $# == 1 ]] || die "usage: $0 leader QUEUE"; SBIN="$(find_sbin)"; cmd_leader "$1" ;;
    close-connections)
      [[ $# == 1 ]] || die "usage: $0 close-connections NODE_INDEX"
      SBIN="$(find_sbin)"
      cmd_close_connections "$1"
      ;;
    depth) [[ $# == 1 ]] || die "usage: $0 depth QUEUE"; SBIN="$(find_sbin)"; cmd_depth "$1" ;;
    status) SBIN="$(find_sbin)"; cmd_status ;;
    down) cmd_down ;;
    *)
      sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
      exit 2
      ;;
  esac
}
main "$@"
