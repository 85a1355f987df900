#!/usr/bin/env bash
# Installs, when missing, the outside tools the hostile-input checks use: Chromium
# (browser CORS check), promtool (Debian's prometheus package), schemathesis (PyPI, in
# a venv cached under ~/.cache/todo-system) and cargo-fuzz. Idempotent.
set -euo pipefail
STATE="${TODO_STATE:-$HOME/.cache/todo-system}"
VENV="$STATE/schemathesis-venv"
SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"

packages=()
command -v chromium >/dev/null || packages+=(chromium)
command -v promtool >/dev/null || packages+=(prometheus)
command -v openssl >/dev/null || packages+=(openssl)
python3 -c 'import venv, ensurepip' 2>/dev/null || packages+=(python3-venv)
if ((${#packages[@]})); then
  echo "installing ${packages[*]}…"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
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

echo "test tools: $(chromium --version 2>/dev/null | head -1); $(promtool --version 2>&1 | head -1);" \
  "$("$VENV/bin/schemathesis" --version); $(cargo fuzz --version 2>/dev/null || echo 'cargo-fuzz absent')"
