# shellcheck shell=bash
# Shared by the CI and setup scripts (source it; it runs nothing by itself): how to do
# what needs root, whether we are root (a container, this project's CI) or not
# (GitHub's hosted runners, a developer's machine: then through sudo); how the hostile
# suite's tool tests run.

# as_root CMD...: runs CMD as root: directly when root, else through sudo (never
# prompting when there is no terminal to answer, as on CI runners).
as_root() {
  if [[ "$(id -u)" == 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    if [[ -t 0 ]]; then sudo "$@"; else sudo -n "$@"; fi
  else
    echo "error: \`$*\` needs root, and this is not root and has no sudo" >&2
    return 1
  fi
}

# can_be_root: true when as_root can work here (root, or sudo is installed).
can_be_root() {
  [[ "$(id -u)" == 0 ]] || command -v sudo >/dev/null 2>&1
}

# apt_install [APT-GET-INSTALL ARGS...] PACKAGE...: installs Debian/Ubuntu packages,
# quietly, with one `apt-get update` per script run.
apt_install() {
  if [[ -z "${APT_UPDATED:-}" ]]; then
    as_root apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
  # sudo resets the environment: pass DEBIAN_FRONTEND through env.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# hostile_tool_test TEST: runs TEST, an ignored test of the hostile suite that drives an
# external tool (browser, Schemathesis), with the test tools, the backends (stopped on
# exit) and the built binaries. Call it from the repository root.
hostile_tool_test() {
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/todo-system/target}"
  bash ci/install-test-tools.sh >/dev/null
  bash ci/backends.sh up
  trap 'bash ci/backends.sh stop' EXIT
  cargo build --locked --quiet --bins
  REQUIRE_TEST_TOOLS=1 cargo test --locked -p todo-e2e --test hostile -- --exact --include-ignored "$1" --nocapture
}
