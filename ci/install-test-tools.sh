#!/usr/bin/env bash
# Installs, when missing, the outside tools the hostile-input checks use: Chromium
# (browser CORS check), promtool (Debian's prometheus package), schemathesis (PyPI, in
# a venv cached under ~/.cache/todo-system), cargo-fuzz and cargo-deny. Idempotent.
# Debian packages install through sudo when not root (ci/lib.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
STATE="${TODO_STATE:-$HOME/.cache/todo-system}"
VENV="$STATE/schemathesis-venv"
# renovate: datasource=pypi depName=schemathesis
SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"
# renovate: datasource=crate depName=cargo-deny
CARGO_DENY_VERSION="${CARGO_DENY_VERSION:-0.20.2}"

packages=()
command -v chromium >/dev/null || packages+=(chromium)
command -v promtool >/dev/null || packages+=(prometheus)
command -v openssl >/dev/null || packages+=(openssl)
python3 -c 'import venv, ensurepip' 2>/dev/null || packages+=(python3-venv)
if ((${#packages[@]})); then
  echo "installing ${packages[*]}…"
  apt_install --no-install-recommends "${packages[@]}"
fi

if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "installing schemathesis $SCHEMATHESIS_VERSION into $VENV…"
  mkdir -p "$STATE"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

if [[ "${INSTALL_CARGO_FUZZ:-1}" == 1 ]] && ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz…"
  cargo install --locked --quiet cargo-fuzz
fi

# Licenses, bans and sources (offline, .ci/run) and RustSec advisories (the workflow).
if ! cargo deny --version 2>/dev/null | grep -qF "cargo-deny $CARGO_DENY_VERSION"; then
  echo "installing cargo-deny $CARGO_DENY_VERSION…"
  cargo install --locked --quiet cargo-deny --version "$CARGO_DENY_VERSION"
fi

echo "test tools: $(chromium --version 2>/dev/null | head -1); $(promtool --version 2>&1 | head -1);" \
  "$("$VENV/bin/schemathesis" --version); $(cargo fuzz --version 2>/dev/null || echo 'cargo-fuzz absent');" \
  "$(cargo deny --version)"
