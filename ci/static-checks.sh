#!/usr/bin/env bash
# Static checks of the deployment files: Dockerfiles, Kubernetes manifests,
# compose.yaml, renovate.json, GitHub workflows, alerting rules and the dashboard,
# YAML style, the setup scripts (with fake tools) and the CI wiring.
#
#   bash ci/static-checks.sh
#
# The checkers are installed from PyPI (pinned in ci/static-requirements.txt)
# into a cached venv: $STATIC_VENV, default ~/.cache/todo-static-venv. Once the
# venv exists everything runs offline. promtool comes from Debian's
# `prometheus` package (installed when missing, through sudo when not root).
# Runs every check, then exits non-zero if any of them failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$PWD"
source ci/lib.sh

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
  echo "==> installing promtool (Debian/Ubuntu package prometheus)"
  apt_install --no-install-recommends prometheus || echo "warning: could not install prometheus" >&2
fi
# deploy/k8s/migrate-to-quorum.sh builds its Job with jq (checked below, and in
# ci/script-tests.sh).
if ! command -v jq >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "==> installing jq"
  apt_install --no-install-recommends jq || echo "warning: could not install jq" >&2
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
# Project rules (ci/deploy-assertions.py): every base image and the frontend pinned by
# digest, binaries built with `cargo auditable`, a `--probe` HEALTHCHECK per image, the
# edge's admin listener on all interfaces and EXPOSEd.
check "deploy/Dockerfile: digests, cargo auditable, --probe health checks, edge admin port" \
  "$venv/bin/python" ci/deploy-assertions.py dockerfile

# ---- Kubernetes ---------------------------------------------------------------
# The kustomize base keeps copies of the edge policies (kustomize cannot read
# ../../../policies); they must match the originals.
policies_in_sync() {
  local rc=0 f
  for f in routes.toml cors.toml; do
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
# The optional tracing component, which no overlay includes: rendered through its
# example (prod + deploy/k8s/components/tracing) so that it cannot rot. Its render
# (tracing.yaml) goes through the rendered-overlay checks below as well.
check "kustomize + kubernetes-validate --strict deploy/k8s/examples/tracing (prod + components/tracing)" \
  render_and_validate deploy/k8s/examples/tracing
# On the rendered overlays: no Deployment an HPA owns sets replicas, the edge's
# upstreams are headless Services, prod images are pinned by digest, only svc-users
# holds a token key (a read-only Secret file; the verifiers get the JWK Set URL and may
# reach svc-users), no private key or JWT_* Secret comes from git; the edge's probes,
# scraping (annotation, ServiceMonitor) on its admin port, which no public Service
# exposes and only Prometheus reaches, its TLS Secret mounted as a directory (no subPath),
# the one the example cert-manager Certificate writes; and ci/pin-prod-digests.sh (CI's
# prod-digests job) writes digests the overlay then uses.
check "rendered overlays: HPA-owned replicas, headless upstreams, prod digests, token keys, edge admin + TLS" \
  "$venv/bin/python" ci/deploy-assertions.py k8s "$work"/*.yaml
check "ci/pin-prod-digests.sh pins the rendered prod overlay" \
  "$venv/bin/python" ci/deploy-assertions.py pin-script
# Traces: in the rendered example, the collector pinned and hardened, its config
# (OTLP/HTTP in, memory_limiter + batch, debug + the backend out), the four apps
# exporting to its Service with the documented sampler, the NetworkPolicies of both
# ends; in the overlays, no trace of it (off by default).
check "tracing component: otel-collector, the four apps export to it, NetworkPolicies, off by default" \
  "$venv/bin/python" ci/deploy-assertions.py tracing "$work/tracing.yaml" "$work/dev.yaml" "$work/prod.yaml"
# A broker that survives losing a node: the example RabbitmqCluster (3 replicas, the
# compose image, one per machine, reachable through the rendered NetworkPolicies), the
# AMQP_URL of its pods in deploy/README.md, deploy/k8s/migrate-to-quorum.sh's Job built
# from each rendered svc-notify Deployment (kubernetes-validate --strict), the section
# svc-notify's refusal names, and the queue arguments in the docs and openapi.yaml.
check "broker: RabbitmqCluster example, AMQP_URL, migration Job, quorum-queue docs" \
  "$venv/bin/python" ci/deploy-assertions.py broker "$work"/*.yaml

# checkov renders every kustomization under deploy/ itself (with the kubectl
# above) and scans it, plus every Dockerfile. Skipped checks carry their
# reason inline: checkov.io/skipN annotations in deploy/k8s and
# `# checkov:skip=` comments in the Dockerfile.
check "checkov deploy/ (kustomize, dockerfile)" \
  checkov --directory deploy --framework kustomize dockerfile --skip-download --compact --quiet

# ---- Compose ------------------------------------------------------------------
check "compose.yaml against the compose-spec schema" \
  check-jsonschema --builtin-schema vendor.compose-spec compose.yaml
check "compose.yaml: loopback, demo profile, --probe health checks, digests, keygen + JWKS, RabbitMQ cluster + TLS profiles, edge admin, jaeger" \
  "$venv/bin/python" ci/deploy-assertions.py compose

# ---- Renovate -------------------------------------------------------------------
check "renovate.json against Renovate's schema" \
  check-jsonschema --builtin-schema vendor.renovate renovate.json
check "renovate.json: known keys, every # renovate: pin read" \
  "$venv/bin/python" ci/deploy-assertions.py renovate

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
  check "grafana dashboard: process panels, layout, every query parses (promtool)" \
    "$venv/bin/python" ci/deploy-assertions.py dashboard "$(command -v promtool)"
else
  echo "FAILED: promtool not found (apt-get install prometheus)" >&2
  failed+=("promtool missing")
fi

# ---- YAML style -------------------------------------------------------------------
check "yamllint" yamllint --strict .

# ---- shell scripts and CI wiring -------------------------------------------------
check "bash -n on the scripts (ci/, scripts/, deploy/, bench/, .ci/run)" \
  bash -c 'for f in ci/*.sh scripts/*.sh deploy/k8s/*.sh bench/*.sh .ci/run; do bash -n "$f" || exit 1; done'
check "setup scripts with fake tools (ci/lib.sh sudo, scripts/quickstart.sh)" bash ci/script-tests.sh
# todo-standalone's data (user database, signing key) must never be committed or sent
# to a docker build.
check "todo-data/ is in .gitignore and .dockerignore" \
  bash -c 'git check-ignore -q --no-index todo-data/jwt-signing.pem && grep -qx "todo-data/" .dockerignore'
check "CI wiring: cargo deny, newcomer check, apt-get only through ci/lib.sh" \
  "$venv/bin/python" ci/deploy-assertions.py ci

echo
if ((${#failed[@]})); then
  echo "static checks FAILED (${#failed[@]}):" >&2
  printf '  - %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "static checks passed"
