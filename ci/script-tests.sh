#!/usr/bin/env bash
# Tests of the setup scripts' decisions, with fake tools on PATH (nothing is installed
# or built): ci/lib.sh runs apt-get directly as root and through `sudo -n` otherwise,
# scripts/quickstart.sh installs exactly what is missing, names it when it cannot, and
# runs the release or debug build, and deploy/k8s/migrate-to-quorum.sh (a fake kubectl)
# stops svc-notify, runs its Job and fails when the Job does. Run by ci/static-checks.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$PWD"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failures=0
unset DEBIAN_FRONTEND # the fakes report whether the scripts set it

# fakes DIR: a PATH directory with logging fakes of id, sudo, apt-get and cargo, plus
# the few real tools the scripts use. FAKE_UID sets `id -u`.
fakes() {
  local dir="$1" tool
  mkdir -p "$dir"
  for tool in env dirname cat; do ln -sf "$(command -v "$tool")" "$dir/$tool"; done
  cat >"$dir/id" <<'EOF'
#!/bin/sh
[ "$1" = -u ] && { echo "${FAKE_UID:-0}"; exit 0; }
exit 1
EOF
  cat >"$dir/sudo" <<'EOF'
#!/bin/sh
echo "sudo $*" >>"$FAKE_LOG"
[ "$1" = -n ] && shift
FAKE_UID=0 exec "$@"
EOF
  cat >"$dir/apt-get" <<'EOF'
#!/bin/sh
echo "apt-get $* (uid ${FAKE_UID:-0}, DEBIAN_FRONTEND=${DEBIAN_FRONTEND:-})" >>"$FAKE_LOG"
EOF
  cat >"$dir/cargo" <<'EOF'
#!/bin/sh
echo "cargo $*" >>"$FAKE_LOG"
EOF
  chmod +x "$dir"/*
}

# present DIR TOOL...: fake, successful build tools.
present() {
  local dir="$1"
  shift
  for tool in "$@"; do printf '#!/bin/sh\n' >"$dir/$tool"; chmod +x "$dir/$tool"; done
}

expect() { # name, expected log (exact), actual log file
  if [[ "$(cat "$3" 2>/dev/null)" == "$2" ]]; then
    echo "    ok: $1"
  else
    echo "    FAILED: $1" >&2
    echo "      expected: $(printf '%q' "$2")" >&2
    echo "      got:      $(printf '%q' "$(cat "$3" 2>/dev/null)")" >&2
    failures=$((failures + 1))
  fi
}

bash_bin="$(command -v bash)"

# ---- ci/lib.sh -----------------------------------------------------------------------
fakes "$work/lib"
FAKE_LOG="$work/lib-root.log" FAKE_UID=0 PATH="$work/lib" "$bash_bin" -c \
  'source ci/lib.sh; apt_install --no-install-recommends foo bar; apt_install baz' </dev/null
expect "lib.sh as root: apt-get directly, one update" \
  "apt-get update -qq (uid 0, DEBIAN_FRONTEND=)
apt-get install -y -qq --no-install-recommends foo bar (uid 0, DEBIAN_FRONTEND=noninteractive)
apt-get install -y -qq baz (uid 0, DEBIAN_FRONTEND=noninteractive)" "$work/lib-root.log"

FAKE_LOG="$work/lib-user.log" FAKE_UID=1001 PATH="$work/lib" "$bash_bin" -c \
  'source ci/lib.sh; apt_install redis-server' </dev/null
expect "lib.sh not root: through sudo -n (no terminal)" \
  "sudo -n apt-get update -qq
apt-get update -qq (uid 0, DEBIAN_FRONTEND=)
sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
apt-get install -y -qq redis-server (uid 0, DEBIAN_FRONTEND=noninteractive)" "$work/lib-user.log"

rm "$work/lib/sudo"
if FAKE_LOG="$work/lib-nosudo.log" FAKE_UID=1001 PATH="$work/lib" "$bash_bin" -c \
  'source ci/lib.sh; as_root apt-get update' </dev/null 2>"$work/lib-nosudo.err"; then
  echo "    FAILED: lib.sh without root or sudo must fail" >&2
  failures=$((failures + 1))
else
  expect "lib.sh without root or sudo: fails, runs nothing" "" "$work/lib-nosudo.log"
fi

# ---- scripts/quickstart.sh -----------------------------------------------------------
# quickstart NAME UID [VAR=VALUE...] -- ARGS...: runs it with the fakes in $work/NAME.
quickstart() {
  local name="$1" uid="$2"
  shift 2
  local vars=()
  while [[ "$1" != -- ]]; do vars+=("$1"); shift; done
  shift
  env "${vars[@]}" FAKE_LOG="$work/$name.log" FAKE_UID="$uid" PATH="$work/$name" \
    "$bash_bin" "$root/scripts/quickstart.sh" "$@" </dev/null >"$work/$name.out" 2>"$work/$name.err"
}

fakes "$work/qs-root"
present "$work/qs-root" cc make pkg-config
quickstart qs-root 0 -- --help
expect "quickstart as root, cmake missing: apt-get cmake, then the release build" \
  "apt-get update -qq (uid 0, DEBIAN_FRONTEND=)
apt-get install -y -qq --no-install-recommends cmake (uid 0, DEBIAN_FRONTEND=noninteractive)
cargo run --release --locked -p todo-standalone -- --help" "$work/qs-root.log"

fakes "$work/qs-user"
present "$work/qs-user" make pkg-config
quickstart qs-user 1001 QUICKSTART_PROFILE=dev --
expect "quickstart not root, cmake and cc missing, dev profile: sudo apt-get, debug build" \
  "sudo -n apt-get update -qq
apt-get update -qq (uid 0, DEBIAN_FRONTEND=)
sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends cmake gcc libc6-dev
apt-get install -y -qq --no-install-recommends cmake gcc libc6-dev (uid 0, DEBIAN_FRONTEND=noninteractive)
cargo run --locked -p todo-standalone --" "$work/qs-user.log"

fakes "$work/qs-nosudo"
rm "$work/qs-nosudo/sudo"
present "$work/qs-nosudo" cc make
if quickstart qs-nosudo 1001 --; then
  echo "    FAILED: quickstart without root or sudo must stop" >&2
  failures=$((failures + 1))
else
  expect "quickstart without root or sudo: installs and builds nothing" "" "$work/qs-nosudo.log"
  if [[ "$(wc -l <"$work/qs-nosudo.err")" -eq 1 ]] && grep -q "cmake pkg-config" "$work/qs-nosudo.err"; then
    echo "    ok: quickstart without root or sudo: one line naming cmake and pkg-config"
  else
    echo "    FAILED: quickstart's message: $(cat "$work/qs-nosudo.err")" >&2
    failures=$((failures + 1))
  fi
fi

fakes "$work/qs-ready"
present "$work/qs-ready" cmake cc make pkg-config
quickstart qs-ready 1001 --
expect "quickstart with everything installed: straight to the build" \
  "cargo run --release --locked -p todo-standalone --" "$work/qs-ready.log"

fakes "$work/qs-nocargo"
rm "$work/qs-nocargo/cargo"
if quickstart qs-nocargo 0 -- || ! grep -q "rustup.rs" "$work/qs-nocargo.err"; then
  echo "    FAILED: quickstart without cargo must point to rustup" >&2
  failures=$((failures + 1))
else
  echo "    ok: quickstart without cargo: points to https://rustup.rs"
fi

# ---- deploy/k8s/migrate-to-quorum.sh --------------------------------------------------
# A fake kubectl: the Deployment asked for, one svc-notify pod still there at the first
# look and gone at the second, a Job that ends as FAKE_JOB_END says; every call logged.
mq="$work/migrate"
mkdir -p "$mq"
for tool in bash env jq mktemp rm cat cp; do ln -sf "$(command -v "$tool")" "$mq/$tool"; done
printf '#!/bin/sh\n' >"$mq/sleep"
cat >"$mq/kubectl" <<'FAKE'
#!/usr/bin/env bash
case "$*" in
  *" create -f "*) args="$*"; cp "${!#}" "$FAKE_JOB"; echo "kubectl ${args% -f *} -f JOB" >>"$FAKE_LOG"; exit 0 ;;
esac
echo "kubectl $*" >>"$FAKE_LOG"
case "$*" in
  *"get deployment svc-notify -o json") cat "$FAKE_DEPLOYMENT" ;;
  *"get pods "*)
    looks="$(cat "$FAKE_LOG.pods" 2>/dev/null || echo 0)"
    echo $((looks + 1)) >"$FAKE_LOG.pods"
    ((looks > 0)) || echo pod/svc-notify-7d9f-abcde
    ;;
  *"get job "*) printf '%s ' "$FAKE_JOB_END" ;;
  *" logs "*) echo "svc-notify: notify.events is now a quorum queue (3 messages moved)" ;;
esac
exit 0
FAKE
chmod +x "$mq/kubectl" "$mq/sleep"
cat >"$work/deployment.json" <<'JSON'
{"apiVersion": "apps/v1", "kind": "Deployment",
 "metadata": {"name": "svc-notify", "namespace": "todo"},
 "spec": {"replicas": 3, "template": {"metadata": {"labels": {"app.kubernetes.io/name": "svc-notify"}},
  "spec": {"serviceAccountName": "svc-notify", "terminationGracePeriodSeconds": 30,
   "containers": [{"name": "svc-notify", "image": "old", "ports": [{"name": "http", "containerPort": 8083}],
    "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}},
    "envFrom": [{"configMapRef": {"name": "todo-config-abc"}}],
    "env": [{"name": "AMQP_URL", "valueFrom": {"secretKeyRef": {"name": "svc-notify-secrets", "key": "AMQP_URL"}}}]}]}}}}
JSON
# migrate NAME END: runs the script against the fakes, the Job ending with END.
migrate() {
  FAKE_LOG="$work/$1.log" FAKE_JOB="$work/$1.job.json" FAKE_DEPLOYMENT="$work/deployment.json" \
    FAKE_JOB_END="$2" PATH="$mq" "$bash_bin" "$root/deploy/k8s/migrate-to-quorum.sh" \
    registry.example/svc-notify@sha256:new </dev/null >"$work/$1.out" 2>"$work/$1.err"
}
migrate mq-ok Complete || echo "    (migrate-to-quorum exited non-zero: $(cat "$work/mq-ok.err"))" >&2
expect "migrate-to-quorum: scale to 0, wait for the pods, run the Job, print its log" \
  "kubectl -n todo get deployment svc-notify -o json
kubectl -n todo scale deployment/svc-notify --replicas=0
kubectl -n todo get pods -l app.kubernetes.io/name=svc-notify,app.kubernetes.io/component=service -o name
kubectl -n todo get pods -l app.kubernetes.io/name=svc-notify,app.kubernetes.io/component=service -o name
kubectl -n todo delete job svc-notify-migrate-to-quorum --ignore-not-found --wait=true
kubectl -n todo create -f JOB
kubectl -n todo get job svc-notify-migrate-to-quorum -o jsonpath={range .status.conditions[?(@.status==\"True\")]}{.type} {end}
kubectl -n todo logs job/svc-notify-migrate-to-quorum --all-containers=true" "$work/mq-ok.log"
jq -c '[.kind, .spec.template.spec.restartPolicy, .spec.template.metadata.labels["app.kubernetes.io/component"],
  (.spec.template.spec.containers[] | [.image, .args, .envFrom, .env[0].name, (.ports // "no ports"),
   (.readinessProbe // "no probe")])]' "$work/mq-ok.job.json" >"$work/mq-ok.job" 2>&1 || true
expect "migrate-to-quorum: the Job has the new image, --migrate-to-quorum, the Deployment's environment, no ports or probes" \
  '["Job","Never","migration",["registry.example/svc-notify@sha256:new",["--migrate-to-quorum"],[{"configMapRef":{"name":"todo-config-abc"}}],"AMQP_URL","no ports","no probe"]]' \
  "$work/mq-ok.job"
if migrate mq-failed Failed; then
  echo "    FAILED: migrate-to-quorum must fail when the Job failed" >&2
  failures=$((failures + 1))
elif grep -q "run this again" "$work/mq-failed.err" && grep -q "quorum queue" "$work/mq-failed.out"; then
  echo "    ok: migrate-to-quorum: a failed Job fails the script, after printing its log"
else
  echo "    FAILED: migrate-to-quorum after a failed Job: $(cat "$work/mq-failed.err")" >&2
  failures=$((failures + 1))
fi

((failures == 0)) || { echo "script tests: $failures failed" >&2; exit 1; }
echo "script tests passed"
