#!/usr/bin/env bash
# Static checks of the deployment files: Dockerfiles, Kubernetes manifests,
# compose.yaml, GitHub workflows, alerting rules, YAML style.
#
#   bash ci/static-checks.sh
#
# The checkers are installed from PyPI (pinned in ci/static-requirements.txt)
# into a cached venv: $STATIC_VENV, default ~/.cache/todo-static-venv. Once the
# venv exists everything runs offline. promtool comes from Debian's
# `prometheus` package (installed when missing and running as root).
# Runs every check, then exits non-zero if any of them failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$PWD"

venv="${STATIC_VENV:-$HOME/.cache/todo-static-venv}"
requirements="$root/ci/static-requirements.txt"

# ---- tools ------------------------------------------------------------------
want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/python" || "$(cat "$venv/.requirements.sha256" 2>/dev/null || true)" != "$want" ]]; then
  echo "==> installing static checkers into $venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  echo "$want" >"$venv/.requirements.sha256"
fi
export PATH="$venv/bin:$PATH"
# checkov: no network (no update check, no policy downloads).
export CKV_SKIP_PACKAGE_UPDATE_CHECK=true

if ! command -v promtool >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  sudo=()
  [[ "$(id -u)" == 0 ]] || sudo=(sudo -n) # e.g. GitHub's runners
  echo "==> installing promtool (Debian/Ubuntu package prometheus)"
  { "${sudo[@]}" apt-get update -qq &&
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } >/dev/null ||
    echo "warning: could not install prometheus" >&2
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

failed=()
# check NAME CMD...: runs one check, records a failure and carries on.
check() {
  local name="$1"
  shift
  echo "==> $name"
  if "$@"; then
    echo "    ok: $name"
  else
    echo "    FAILED: $name" >&2
    failed+=("$name")
  fi
}

# ---- Dockerfiles --------------------------------------------------------------
mapfile -t dockerfiles < <(find . \( -path ./target -o -path ./.git -o -path './.venv*' -o -name node_modules \) -prune \
  -o -type f \( -name Dockerfile -o -name 'Dockerfile.*' -o -name '*.Dockerfile' \) -print | sort)
for f in "${dockerfiles[@]}"; do
  check "hadolint $f" hadolint "$f"
done

# ---- Kubernetes ---------------------------------------------------------------
# The kustomize base keeps copies of the edge policies (kustomize cannot read
# ../../../policies); they must match the originals.
policies_in_sync() {
  local rc=0 f
  for f in routes.toml limits.toml cors.toml; do
    if [[ -f "policies/$f" ]]; then
      diff -u "policies/$f" "deploy/k8s/base/policies/$f" || rc=1
    else
      echo "    policies/$f missing" >&2
      rc=1
    fi
  done
  ((rc == 0)) || echo "    run deploy/k8s/sync-policies.sh" >&2
  return "$rc"
}
if [[ -d policies ]]; then
  check "deploy/k8s/base/policies in sync with policies/" policies_in_sync
else
  echo "==> policies/ not present yet: skipping the policy sync check"
fi

render_and_validate() {
  local overlay="$1" out
  out="$work/$(basename "$overlay").yaml"
  kubectl kustomize "$overlay" >"$out" || return 1
  # Strict: unknown fields are errors. Floor (oldest supported) and newest
  # schema version shipped with kubernetes-validate, all offline.
  kubernetes-validate --strict --quiet -k 1.31.0 "$out" &&
    kubernetes-validate --strict --quiet "$out"
}
for overlay in deploy/k8s/overlays/*/; do
  check "kustomize + kubernetes-validate --strict ${overlay%/}" render_and_validate "${overlay%/}"
done

# checkov renders every kustomization under deploy/ itself (with the kubectl
# above) and scans it, plus every Dockerfile. Skipped checks carry their
# reason inline: checkov.io/skipN annotations in deploy/k8s and
# `# checkov:skip=` comments in the Dockerfile.
check "checkov deploy/ (kustomize, dockerfile)" \
  checkov --directory deploy --framework kustomize dockerfile --skip-download --compact --quiet

# ---- Compose ------------------------------------------------------------------
check "compose.yaml against the compose-spec schema" \
  check-jsonschema --builtin-schema vendor.compose-spec compose.yaml

# ---- GitHub Actions -------------------------------------------------------------
mapfile -t workflows < <(find .github/workflows -type f \( -name '*.yml' -o -name '*.yaml' \) | sort)
if ((${#workflows[@]})); then
  check "workflows against GitHub's workflow schema" \
    check-jsonschema --builtin-schema vendor.github-workflows "${workflows[@]}"
  check "zizmor --offline .github/workflows" zizmor --offline --no-progress .github/workflows
fi

# ---- Observability ---------------------------------------------------------------
check "grafana dashboard is valid JSON" \
  python3 -m json.tool deploy/observability/grafana-dashboard.json /dev/null
if command -v promtool >/dev/null 2>&1; then
  check "promtool check rules" promtool check rules deploy/observability/alerts.rules.yml
  check "promtool test rules" promtool test rules deploy/observability/alerts.test.yml
else
  echo "FAILED: promtool not found (apt-get install prometheus)" >&2
  failed+=("promtool missing")
fi

# ---- YAML style -------------------------------------------------------------------
check "yamllint" yamllint --strict .

# ---- shell scripts ------------------------------------------------------------
check "bash -n on ci/ and deploy/ scripts" \
  bash -c 'for f in ci/*.sh deploy/k8s/*.sh; do bash -n "$f" || exit 1; done'

echo
if ((${#failed[@]})); then
  echo "static checks FAILED (${#failed[@]}):" >&2
  printf '  - %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "static checks passed"
