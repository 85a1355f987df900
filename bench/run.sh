#!/usr/bin/env bash
# The benchmark: builds the release binaries, then runs bench/bench.py, which measures
# nginx (plain reverse proxy) against the edge on one pinned core, interleaved (the edge
# checking HS256 and EdDSA tokens, with and without its verified-token cache, with local and
# Redis-shared rate limits), nginx terminating TLS against the edge terminating TLS
# (keep-alive HTTP/1.1, a handshake per request, HTTP/2), and the
# service scenarios (login vs bcrypt, cached vs uncached lists, completion→notification).
#
#   bash bench/run.sh            full run (about 8 minutes): bench/results/latest.{md,svg,json}
#   bash bench/run.sh --smoke    a few seconds of each scenario, for CI: bench/results/smoke.*
#   bash bench/run.sh --debug     (debug binaries: CI's smoke run uses --smoke --debug)
#   bash bench/run.sh --no-build (use the binaries already built), --only proxy|tls|services, --rounds N, --seconds S, --bcrypt-cost C,
#                     --edges edge,edge-shared,edge-bare,edge-bare-nolog,edge-eddsa,edge-nocache,edge-eddsa-nocache,
#                     edge-traced, edge-traced-1pct (spans exported to a local OTLP stand-in, sampler ratio 1.0 / 0.01),
#                     edge-baseline (the edge binary BENCH_BASELINE_EDGE names: before/after in one run),
#                     naive (bench/naive-pingora: a naive Pingora build, the reference of issue 17),
#                     pingora-plain (the same build with every filter off: Pingora's own floor),
#                     --profile (perf, full edge)
#
# Exits non-zero when a process fails to start or dies, or wrk sees errors or non-2xx
# answers. Every process it starts listens on 127.0.0.1 and is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
started_at=$SECONDS

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/todo-system/target}"
export CARGO_TERM_COLOR=never

services=1
build=1
profile=release
args=()
for arg in "$@"; do
  case "$arg" in
    --no-build) build=0 ;; # use the release binaries already in $CARGO_TARGET_DIR
    # Debug binaries (those the tests built): CI's smoke run checks the harness still
    # works without a release build; its figures mean nothing.
    --debug) profile=debug ;;
    *) args+=("$arg") ;;
  esac
  [[ "$arg" == "proxy" || "$arg" == "tls" ]] && services=0
done

say() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# --- prerequisites ------------------------------------------------------------------
missing=()
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
command -v h2load >/dev/null || missing+=(nghttp2-client) # HTTP/2 load for the TLS comparison
command -v openssl >/dev/null || missing+=(openssl)
command -v taskset >/dev/null || missing+=(util-linux)
command -v python3 >/dev/null || missing+=(python3)
if ((${#missing[@]})); then
  source ci/lib.sh # as root, or through sudo (e.g. GitHub's runners)
  if ! command -v apt-get >/dev/null || ! can_be_root; then
    echo "bench: missing ${missing[*]}; install them (apt-get install ${missing[*]})" >&2
    exit 1
  fi
  say "installing ${missing[*]}"
  apt_install "${missing[@]}"
fi
export PATH="$PATH:/usr/sbin"
if (($(nproc) < 2)); then
  echo "bench: needs 2 CPUs (proxy on core 0, load and upstream on core 1); this machine has $(nproc)" >&2
  exit 1
fi
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "bench: needs Python >= 3.11 (tomllib)" >&2; exit 1; }

# --- build --------------------------------------------------------------------------
binaries="$CARGO_TARGET_DIR/$profile"
profile_flag=()
[[ $profile == release ]] && profile_flag=(--release)
if ((build)); then
  say "building $profile binaries into $CARGO_TARGET_DIR"
  cargo build "${profile_flag[@]}" --locked -p edge -p svc-users -p svc-tasks -p svc-notify
  cargo build "${profile_flag[@]}" --locked --manifest-path bench/bcrypt-rate/Cargo.toml
  cargo build "${profile_flag[@]}" --locked --manifest-path bench/naive-pingora/Cargo.toml
fi
for binary in edge svc-users svc-tasks svc-notify bcrypt-rate naive-pingora; do
  [[ -x "$binaries/$binary" ]] || { echo "bench: $binaries/$binary is missing (run without --no-build)" >&2; exit 1; }
done

# --- run ----------------------------------------------------------------------------
run_dir=$(mktemp -d /tmp/todo-bench.XXXXXX)
backends_up=0
cleanup() {
  local status=$?
  # bench.py stops what it started; this catches anything left if it was killed.
  if [[ -f "$run_dir/pids" ]]; then
    while read -r pid start; do
      if [[ -r /proc/$pid/stat ]] && [[ $(awk '{print $22}' "/proc/$pid/stat" 2>/dev/null) == "$start" ]]; then
        kill -TERM "$pid" 2>/dev/null || true
      fi
    done <"$run_dir/pids"
  fi
  ((backends_up)) && bash ci/backends.sh stop || true
  if ((status == 0)); then
    rm -rf "$run_dir"
  else
    echo "bench: logs and configs kept in $run_dir" >&2
  fi
  say "total time $((SECONDS - started_at)) s (build included), exit status $status"
}
trap cleanup EXIT

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Redis always (the edge-shared configuration leases its budget there); MongoDB and
# RabbitMQ for the service scenarios.
if ! port_open 6379 || { ((services)) && ! { port_open 27017 && port_open 5672; }; }; then
  # Only when one is missing, so `stop` never touches backends that were already up.
  bash ci/backends.sh up
  backends_up=1
fi

# bench.py bounds every step; the outer timeout is a last resort.
timeout --signal=TERM --kill-after=30 2400 \
  python3 bench/bench.py --binaries "$binaries" --bcrypt-rate "$binaries/bcrypt-rate" --run-dir "$run_dir" "${args[@]}"
