#!/usr/bin/env bash
# Copies the edge policies that are the same everywhere (routes, cors) from
# policies/ into the kustomize base, which cannot read files outside its own
# directory. upstreams.toml and limits.toml are NOT copied: the base keeps its
# own, with the Kubernetes Service DNS names and with the limits shared by all
# replicas (store = "redis"; an edge test checks the numbers match policies/).
# ci/static-checks.sh fails while the copies differ from policies/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
for f in routes.toml cors.toml; do
  cp "$root/policies/$f" "$root/deploy/k8s/base/policies/$f"
  echo "synced policies/$f -> deploy/k8s/base/policies/$f"
done
