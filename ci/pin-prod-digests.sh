#!/usr/bin/env bash
# Pins the prod overlay's images to digests: writes `digest: sha256:…` (and, with
# --prefix, `newName: <prefix>/<service>`) into the `images:` entries of
# deploy/k8s/overlays/prod/kustomization.yaml, replacing any tag. Comments and
# everything else in the file stay as they are.
#
#   bash ci/pin-prod-digests.sh [--prefix ghcr.io/<owner>/<repo>] edge=sha256:<64 hex> \
#     svc-users=sha256:… svc-tasks=sha256:… svc-notify=sha256:…
#
# CI's `prod-digests` job (.github/workflows/ci.yml) runs it with the digests of the
# images it has just pushed. PROD_KUSTOMIZATION points it at another file (the static
# checks run it on a copy).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
file="${PROD_KUSTOMIZATION:-deploy/k8s/overlays/prod/kustomization.yaml}"

prefix=""
pins=()
while (($#)); do
  case "$1" in
    --prefix) prefix="${2:?--prefix needs a value}"; shift 2 ;;
    -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
    *=*) pins+=("$1"); shift ;;
    *) echo "pin-prod-digests: unexpected argument $1 (want service=sha256:<digest>)" >&2; exit 2 ;;
  esac
done
((${#pins[@]})) || { echo "pin-prod-digests: no service=sha256:<digest> given" >&2; exit 2; }

python3 - "$file" "$prefix" "${pins[@]}" <<'PY'
import re
import sys

path, prefix, pins = sys.argv[1], sys.argv[2], sys.argv[3:]
services = ("edge", "svc-users", "svc-tasks", "svc-notify")
wanted = {}
for pin in pins:
    service, _, digest = pin.partition("=")
    if service not in services:
        sys.exit(f"pin-prod-digests: unknown service {service!r} (one of {', '.join(services)})")
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        sys.exit(f"pin-prod-digests: {service}: {digest!r} is not sha256:<64 lowercase hex>")
    wanted[service] = digest

lines = open(path, encoding="utf-8").read().split("\n")
try:
    start = lines.index("images:")
except ValueError:
    sys.exit(f"pin-prod-digests: {path} has no top-level `images:`")
end = start + 1
while end < len(lines) and (lines[end].startswith((" ", "-")) or lines[end] == ""):
    end += 1

out, entry, done = lines[:start + 1], None, set()


def finish(entry):
    """Rewrites one `- name: todo/<service>` entry if it is to be pinned."""
    if entry is None:
        return []
    head, fields = entry
    service = head.split("todo/", 1)[1].strip() if "todo/" in head else None
    if service not in wanted:
        return [head] + fields
    indent = re.match(r"\s*", fields[0] if fields else "    ").group(0) or "    "
    kept = [f for f in fields if not re.match(r"\s*(newTag|digest|newName):", f)]
    name = [f"{indent}newName: {prefix}/{service}"] if prefix else [
        f for f in fields if re.match(r"\s*newName:", f)]
    done.add(service)
    return [head] + name + [f"{indent}digest: {wanted[service]}"] + kept


for line in lines[start + 1:end]:
    if re.match(r"\s*- name:", line):
        out += finish(entry)
        entry = (line, [])
    elif entry is not None and line.strip():
        entry[1].append(line)
    else:
        out += finish(entry)
        entry = None
        out.append(line)
out += finish(entry)
out += lines[end:]

missing = sorted(set(wanted) - done)
if missing:
    sys.exit(f"pin-prod-digests: no images entry `- name: todo/<service>` for {', '.join(missing)} in {path}")
open(path, "w", encoding="utf-8").write("\n".join(out))
for service in sorted(done):
    print(f"pinned {service} to {wanted[service]}" + (f" ({prefix}/{service})" if prefix else ""))
PY
