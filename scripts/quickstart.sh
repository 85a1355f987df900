#!/usr/bin/env bash
# The first command on a fresh machine that has only the Rust toolchain: installs what
# the build needs and is missing (cmake, a C compiler, make, pkg-config: Pingora builds
# zlib-ng and zstd from C), then runs the whole system in one process:
#
#   bash scripts/quickstart.sh            # cargo run --release -p todo-standalone
#   bash scripts/quickstart.sh --help     # arguments go to todo-standalone
#
# Debian/Ubuntu: apt-get when root, `sudo apt-get` otherwise. Elsewhere it names what
# to install and stops. QUICKSTART_PROFILE=dev builds and runs the debug profile
# instead (faster to build; CI's newcomer check uses it). CARGO_TARGET_DIR and the
# todo-standalone variables (LISTEN_ADDR, TODO_DATA_DIR, ...) are honoured as usual.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source ci/lib.sh

if ! command -v cargo >/dev/null 2>&1; then
  echo "quickstart: cargo not found: install the Rust toolchain (https://rustup.rs), then run this again" >&2
  exit 1
fi

# command -> the Debian/Ubuntu package that provides it
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)

if ((${#missing[@]})); then
  if command -v apt-get >/dev/null 2>&1 && can_be_root; then
    echo "quickstart: installing ${missing[*]} (apt-get$([[ "$(id -u)" == 0 ]] || echo ', through sudo'))"
    apt_install --no-install-recommends "${missing[@]}"
  else
    echo "quickstart: the build needs ${missing[*]} (cmake, a C compiler, make, pkg-config): install them with your package manager, then run this again" >&2
    exit 1
  fi
fi

profile=(--release)
case "${QUICKSTART_PROFILE:-release}" in
  release) ;;
  dev) profile=() ;;
  *) echo "quickstart: QUICKSTART_PROFILE must be release or dev, not ${QUICKSTART_PROFILE}" >&2; exit 2 ;;
esac

echo "quickstart: building and starting todo-standalone (the first build takes a few minutes)…"
exec cargo run "${profile[@]}" --locked -p todo-standalone -- "$@"
