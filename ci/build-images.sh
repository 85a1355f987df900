#!/usr/bin/env bash
# Builds the four images locally from deploy/Dockerfile (needs Docker with
# BuildKit). CI builds and pushes them with .github/workflows/ci.yml instead.
#   bash ci/build-images.sh                # todo/<service>:local
#   PREFIX=ghcr.io/me/todo TAG=abc bash ci/build-images.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
prefix="${PREFIX:-todo}"
tag="${TAG:-local}"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
for service in svc-users svc-tasks svc-notify edge; do
  echo "==> $prefix/$service:$tag"
  DOCKER_BUILDKIT=1 docker build -f deploy/Dockerfile --target "$service" \
    --build-arg "VERSION=$tag" --build-arg "REVISION=$revision" \
    -t "$prefix/$service:$tag" .
done
