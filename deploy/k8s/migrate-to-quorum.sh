#!/usr/bin/env bash
# The one-off move of svc-notify's classic queues (installations from before quorum
# queues) to quorum queues, in Kubernetes (deploy/README.md, "Moving to quorum queues"):
#
#   deploy/k8s/migrate-to-quorum.sh [-n NAMESPACE] IMAGE
#
# IMAGE is the new svc-notify image, the version with --migrate-to-quorum (e.g. the
# digest the prod overlay pins: ghcr.io/<owner>/<repo>/svc-notify@sha256:...). In
# NAMESPACE (default todo), it scales the svc-notify Deployment to 0 and waits for its
# pods to be gone, then runs `svc-notify --migrate-to-quorum` once as the Job
# svc-notify-migrate-to-quorum, built from the Deployment's own pod template (same
# service account, environment, ConfigMaps and Secrets, whatever their generated names;
# no ports or probes), waits for it and prints its log. svc-notify stays at 0 replicas:
# roll out the new version next (kubectl apply -k deploy/k8s/overlays/<overlay>).
# Publishers keep running throughout. Run again after a failure (the migration is
# idempotent; deploy/README.md says what to check first).
#
#   deploy/k8s/migrate-to-quorum.sh --job IMAGE < deployment.json
#
# only prints that Job for the Deployment given as JSON on stdin (ci/deploy-assertions.py
# checks it against the rendered overlays). Needs kubectl and jq.
set -euo pipefail

JOB=svc-notify-migrate-to-quorum
SELECTOR=app.kubernetes.io/name=svc-notify,app.kubernetes.io/component=service
WAIT_PODS=180     # seconds for svc-notify's pods to stop (their grace period is 30 s)
WAIT_JOB=3600     # seconds for the migration (the Job's own deadline)

die() { echo "migrate-to-quorum: $*" >&2; exit 1; }
say() { echo "migrate-to-quorum: $*" >&2; }

# job_for IMAGE: the Job, as JSON, for the Deployment read on stdin.
job_for() {
  jq --arg image "$1" --arg job "$JOB" '
    { "app.kubernetes.io/name": "svc-notify", "app.kubernetes.io/component": "migration" } as $labels
    | if (.kind != "Deployment") or (.metadata.name != "svc-notify") then
        error("expected the Deployment svc-notify, got \(.kind) \(.metadata.name)")
      else . end
    | {
        apiVersion: "batch/v1",
        kind: "Job",
        metadata: ({ name: $job, labels: $labels }
          + (if .metadata.namespace then { namespace: .metadata.namespace } else {} end)),
        spec: {
          backoffLimit: 3,
          activeDeadlineSeconds: 3600,
          ttlSecondsAfterFinished: 604800,
          template: {
            # The NetworkPolicy of svc-notify (RabbitMQ, DNS) applies to it; its Service does
            # not route here (no port named http); component=migration keeps it out of
            # the wait for the pods of the Deployment (component=service).
            metadata: { labels: $labels },
            spec: (.spec.template.spec
              | .restartPolicy = "Never"
              | del(.topologySpreadConstraints, .affinity, .terminationGracePeriodSeconds)
              | .containers |= map(select(.name == "svc-notify")
                  | .name = "migrate"
                  | .image = $image
                  | .args = ["--migrate-to-quorum"]
                  | del(.command, .ports, .startupProbe, .livenessProbe, .readinessProbe, .lifecycle)))
          }
        }
      }
    | if (.spec.template.spec.containers | length) != 1 then
        error("the Deployment has no container named svc-notify")
      else . end'
}

namespace=todo
job_only=0
while (($#)); do
  case "$1" in
    -n) namespace="${2:?-n needs a namespace}"; shift 2 ;;
    --job) job_only=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) break ;;
  esac
done
(($# == 1)) || die "usage: $0 [-n NAMESPACE] IMAGE, or $0 --job IMAGE < deployment.json"
image="$1"
[[ "$image" == *svc-notify* ]] || die "IMAGE should be a svc-notify image, not '$image'"
command -v jq >/dev/null || die "needs jq"

if ((job_only)); then
  job_for "$image"
  exit 0
fi

command -v kubectl >/dev/null || die "needs kubectl"
k() { kubectl -n "$namespace" "$@"; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
k get deployment svc-notify -o json >"$work/deployment.json"
job_for "$image" <"$work/deployment.json" >"$work/job.json"
replicas="$(jq -r '.spec.replicas // 1' "$work/deployment.json")"

say "scaling deployment/svc-notify in $namespace from $replicas to 0"
k scale deployment/svc-notify --replicas=0 >/dev/null
for ((t = 0; ; t += 2)); do
  [[ -z "$(k get pods -l "$SELECTOR" -o name)" ]] && break
  ((t < WAIT_PODS)) || die "svc-notify's pods still run after ${WAIT_PODS}s (kubectl -n $namespace get pods -l $SELECTOR)"
  sleep 2
done

say "running $image --migrate-to-quorum as job/$JOB"
k delete job "$JOB" --ignore-not-found --wait=true >/dev/null
k create -f "$work/job.json" >/dev/null
outcome=""
for ((t = 0; t < WAIT_JOB; t += 5)); do
  conditions="$(k get job "$JOB" -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type} {end}')"
  case " $conditions " in
    *" Complete "*) outcome=complete; break ;;
    *" Failed "*) outcome=failed; break ;;
  esac
  sleep 5
done
k logs "job/$JOB" --all-containers=true || true
case "$outcome" in
  complete)
    say "done. svc-notify is at 0 replicas: roll out the new version now"
    say "(kubectl apply -k deploy/k8s/overlays/<overlay>; it sets the replica count again)"
    ;;
  failed)
    die "job/$JOB failed (log above): fix the cause, check that no <queue>.migrating is left" \
      "(deploy/README.md, \"Moving to quorum queues\") and run this again"
    ;;
  *) die "job/$JOB did not finish within ${WAIT_JOB}s (kubectl -n $namespace describe job $JOB)" ;;
esac
