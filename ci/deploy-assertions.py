#!/usr/bin/env python3
"""Project rules over the deployment files that no schema or linter knows, one check per
subcommand (ci/static-checks.sh runs each with the static-checks venv's Python, which
has PyYAML):

  compose                  the edge is published on loopback by default, the demo users are
                           behind the `demo` profile, every app container has a `--probe`
                           health check naming its image's binary, the edge waits for healthy
                           services, third-party images are pinned by digest; tokens: the
                           one-shot keygen writes the signing key into a volume only svc-users
                           (and seed) mount, read-only, at a directory the image gives its
                           user; the verifiers get svc-users' JWK Set URL and mount nothing;
                           no HS256 secret in compose.yaml or .env.example; RabbitMQ: the
                           `rabbitmq-cluster` profile runs an odd number (>= 3) of nodes of the
                           single node's image, fixed hostnames, one volume each, one shared
                           Erlang cookie, deploy/compose/rabbitmq.conf listing exactly them, a
                           health check waiting for the whole cluster; svc-tasks and svc-notify
                           get one AMQP_URL, the single node unless .env names others, and wait
                           for the nodes without requiring the profile; .env.example shows the
                           URL list of exactly those nodes; the edge: an admin listener
                           (EDGE_ADMIN_ADDR) on a port of its own, never published; TLS
                           (EDGE_TLS_CERT/KEY) only in a profile, both files from one read-only
                           directory mount of a git-ignored host directory; traces: a `jaeger`
                           service in every profile with its OTLP receiver on, publishing only
                           its UI on 127.0.0.1, hardened; every long-running Rust service
                           exports to http://jaeger:4318 and does not wait for its health
  dockerfile               base images and the frontend pinned by digest, binaries built with
                           `cargo auditable` (pinned), a `--probe` HEALTHCHECK per runtime image;
                           the edge image sets EDGE_ADMIN_ADDR on all interfaces and EXPOSEs it
  k8s RENDERED...          in rendered overlays: no Deployment an HPA scales sets `replicas`;
                           the edge's upstream names are headless Services; images by digest
                           in prod; tokens: only svc-users mounts a Secret with its signing
                           key (a file, read-only), the verifiers get the JWK Set URL of the
                           svc-users Service and no token key, no Secret holds a JWT_* key or
                           a private key, the NetworkPolicies let the verifiers reach
                           svc-users' port; the edge: probes, the Prometheus annotation and
                           the ServiceMonitor on its admin port, which no Service but a
                           ClusterIP one of its own exposes and only Prometheus may reach
                           (NetworkPolicies); its TLS pair, when set, from a Secret mounted
                           read-only as a directory (no subPath), the one the example
                           cert-manager Certificate writes
  pin-script               ci/pin-prod-digests.sh writes digests that the rendered prod
                           overlay then uses (on a copy of deploy/k8s)
  renovate [SCHEMA]        renovate.json's keys exist in the vendored Renovate schema and its
                           regex manager picks up every `# renovate:` annotation
  dashboard [PROMTOOL]     the Grafana dashboard has the process panels, unique panel ids,
                           no overlapping panels, and every query parses (promtool)
  ci                       .ci/run and the workflow run cargo deny and the newcomer check;
                           no script calls apt-get except through ci/lib.sh
  tracing TRACED PLAIN...  traces (deploy/k8s/components/tracing), in TRACED (the rendered
                           example that includes it): an otel-collector Deployment on the core
                           image by digest, hardened, probed on its health_check extension, its
                           config receiving OTLP/HTTP on the Service's port, memory_limiter
                           first and batch, exporting to debug and to an otlphttp backend read
                           from one ConfigMap variable; the four apps' OTEL_EXPORTER_OTLP_ENDPOINT
                           is that Service and their sampler parent-based with a ratio; the
                           NetworkPolicies let each app reach it on 4318, admit nobody else
                           there, and let it reach DNS and the backend's port; in the PLAIN
                           overlays no collector and no export (off by default), and no overlay
                           lists the component; deploy/README.md documents it
  broker RENDERED...       a broker that survives losing a node: the example RabbitmqCluster
                           has an odd number (>= 3) of replicas, the compose image, one node per
                           machine, and the name and namespace the rendered NetworkPolicies let
                           svc-tasks and svc-notify reach on 5672; no kustomization applies the
                           examples; deploy/README.md shows the AMQP_URL of exactly its per-pod
                           names; deploy/k8s/migrate-to-quorum.sh builds, from each rendered
                           svc-notify Deployment, a Job with its environment that runs
                           --migrate-to-quorum (kubernetes-validate --strict); the section that
                           svc-notify's refusal names exists; README, openapi.yaml and the docs
                           state the queue arguments and delivery limit the code declares
"""

import base64
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
APPS = ("edge", "svc-users", "svc-tasks", "svc-notify")
VERIFIERS = ("edge", "svc-tasks", "svc-notify")
JWKS_PATH = "/.well-known/jwks.json"
# HS256 settings: compatibility mode only, never what the repository deploys.
SHARED_SECRET_VARS = ("JWT_SECRET", "JWT_PREVIOUS_KEYS")
# What only svc-users, the signer, may hold.
SIGNER_VARS = ("JWT_SIGNING_KEY", "JWT_PREVIOUS_PUBLIC_KEYS")
# Published in this repository at some point: whoever read it could mint tokens.
PUBLISHED_SECRETS = (
    "CHANGE-ME-this-placeholder-is-not-a-secret-0123456789",
    "dev-placeholder-jwt-secret-not-for-production-0123456789",
    "todo-dev-mode-only-secret-do-not-use-in-production",
)
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
# The edge's admin listener (metrics, readiness) and its TLS pair.
ADMIN_VAR = "EDGE_ADMIN_ADDR"
TLS_VARS = ("EDGE_TLS_CERT", "EDGE_TLS_KEY")
# The keys of a kubernetes.io/tls Secret, in TLS_VARS order.
TLS_SECRET_KEYS = ("tls.crt", "tls.key")
EXAMPLE_CERTIFICATE = "deploy/k8s/examples/edge-certificate.yaml"
SERVICE_MONITOR = "deploy/observability/servicemonitor.yaml"
# Who may scrape: the Prometheus pods in the namespace monitoring (deploy/README.md).
PROMETHEUS_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
}
problems = []


def problem(message):
    problems.append(message)


def interpolate(text, env=None):
    """Compose's ${VAR:-default} / ${VAR-default} / ${VAR:?err} / ${VAR}, nested ones
    included (innermost first), with the given environment (default: empty)."""
    env = env or {}

    def value(match):
        name, operator, default = match.group(1), match.group(2) or "", match.group(3)
        if operator.endswith("?"):
            return env.get(name, "")
        if operator.startswith(":"):
            return env.get(name) or default
        return env.get(name, default if operator else "")

    innermost = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])((?:(?!\$\{)[^}])*))?\}")
    previous = None
    while previous != text:
        previous, text = text, innermost.sub(value, text)
    return text


def dockerfile_stages():
    """{stage name: [instruction lines]} of deploy/Dockerfile (continuations joined)."""
    text = (ROOT / "deploy/Dockerfile").read_text().replace("\\\n", " ")
    stages, current = {}, None
    for line in text.splitlines():
        line = line.strip()
        match = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if match:
            current = match.group(2) or match.group(1)
            stages[current] = [line]
        elif current and line and not line.startswith("#"):
            stages[current].append(line)
    return stages


def check_compose():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    for name, service in services.items():
        for port in service.get("ports", []):
            published = interpolate(str(port))
            parts = published.split(":")
            if len(parts) != 3 or parts[0] != "127.0.0.1":
                problem(f"compose: {name} publishes {port!r} = {published!r} by default: bind it to 127.0.0.1")
        image = service.get("image", "")
        if "build" not in service and not DIGEST.search(image):
            problem(f"compose: {name}: image {image!r} is not pinned by digest")
    seed = services.get("seed")
    if not seed or "demo" not in seed.get("profiles", []):
        problem("compose: the seed service (demo users) must be in the `demo` profile")
    profiled = {name for name, service in services.items() if service.get("profiles")}
    for name, service in services.items():
        if service.get("profiles"):
            continue
        depends = service.get("depends_on", {}) or {}
        for dependency in depends:
            optional = isinstance(depends, dict) and (depends[dependency] or {}).get("required") is False
            if dependency in profiled and not optional:
                problem(f"compose: {name} depends on {dependency}, which only runs with its profile "
                        "(only `required: false` may name a profiled service)")
    stages = dockerfile_stages()
    for app in APPS:
        service = services.get(app)
        if not service:
            problem(f"compose: service {app} missing")
            continue
        target = service.get("build", {}).get("target")
        binary = f"/usr/local/bin/{app}"
        if not any(f'ENTRYPOINT ["{binary}"]' in line for line in stages.get(target, [])):
            problem(f"compose: {app} builds target {target!r}, whose ENTRYPOINT is not {binary}")
        test = (service.get("healthcheck") or {}).get("test")
        if test != ["CMD", binary, "--probe"]:
            problem(f"compose: {app} healthcheck test is {test!r}, expected ['CMD', '{binary}', '--probe']")
    edge_deps = services.get("edge", {}).get("depends_on", {}) or {}
    for app in APPS[1:]:
        condition = (edge_deps.get(app) or {}).get("condition") if isinstance(edge_deps, dict) else None
        if condition != "service_healthy":
            problem(f"compose: the edge must depend on {app} with condition service_healthy (has {condition!r})")
    check_compose_tokens(services, stages)
    check_compose_rabbitmq(services)
    check_compose_edge(services)
    check_compose_tracing(services)


JAEGER = "jaeger"
OTLP_HTTP_PORT = 4318
JAEGER_UI_PORT = 16686
ENDPOINT_VAR = "OTEL_EXPORTER_OTLP_ENDPOINT"


def environment(service):
    """A Compose service's environment as a dict (map or list syntax)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return env


def check_compose_tracing(services):
    """Jaeger receives every Rust service's spans; only its UI is published, on loopback;
    no service waits for it to be healthy (export never blocks one)."""
    jaeger = services.get(JAEGER)
    if not jaeger:
        problem(f"compose: no `{JAEGER}` service: the Rust services export their spans to it")
        return
    where = f"compose: {JAEGER}"
    if jaeger.get("profiles"):
        problem(f"{where} must run in every profile: every Rust service exports to it")
    if str(environment(jaeger).get("COLLECTOR_OTLP_ENABLED", "")).lower() != "true":
        problem(f"{where}: COLLECTOR_OTLP_ENABLED must be \"true\" (its OTLP receiver)")
    published = [interpolate(str(port)) if not isinstance(port, dict) else port for port in jaeger.get("ports") or []]
    if published != [f"127.0.0.1:{JAEGER_UI_PORT}:{JAEGER_UI_PORT}"]:
        problem(f"{where} must publish its UI only, on loopback: 127.0.0.1:{JAEGER_UI_PORT}:{JAEGER_UI_PORT} "
                f"(publishes {published}; OTLP {OTLP_HTTP_PORT} stays on the Compose network)")
    if "ALL" not in (jaeger.get("cap_drop") or []) or "no-new-privileges:true" not in (jaeger.get("security_opt") or []):
        problem(f"{where}: drop all capabilities and set no-new-privileges:true, like the other containers")
    endpoint = f"http://{JAEGER}:{OTLP_HTTP_PORT}"
    exporters = []
    for name, service in sorted(services.items()):
        # The long-running Rust services (edge-tls included); not the one-shots.
        if (service.get("build") or {}).get("target") not in APPS or service.get("restart") == "no":
            continue
        exporters.append(name)
        value = environment(service).get(ENDPOINT_VAR)
        if value != endpoint:
            problem(f"compose: {name} must export its spans with {ENDPOINT_VAR}={endpoint} (has {value!r})")
        if condition(service, JAEGER) not in (None, "service_started"):
            problem(f"compose: {name} waits for {JAEGER} with condition {condition(service, JAEGER)!r}: "
                    "at most service_started (export failures never block a service)")
    if not set(APPS) <= set(exporters):
        problem(f"compose: the services exporting spans are {exporters}, expected all of {list(APPS)}")


def addr_port(value):
    """(host, port) of a HOST:PORT listen address ([v6]:PORT included), or None."""
    match = re.fullmatch(r"\[?([^\]]*?)\]?:(\d+)", str(value or ""))
    return (match.group(1), int(match.group(2))) if match else None


def git_ignored(path):
    """Whether git ignores `path` (relative to the repository), tracked or not."""
    return subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", "--no-index", path]).returncode == 0


def check_compose_edge(services):
    """The edge's admin listener stays on the Compose network; TLS is a profile whose
    certificate pair comes from a git-ignored host directory, mounted read-only."""
    edges = {name: s for name, s in services.items() if (s.get("build") or {}).get("target") == "edge"}
    for name, service in sorted(edges.items()):
        where = f"compose: {name}"
        env = service.get("environment") or {}
        admin, listen = addr_port(env.get(ADMIN_VAR)), addr_port(env.get("LISTEN_ADDR"))
        if not admin or not listen or admin[1] == listen[1]:
            problem(f"{where}: {ADMIN_VAR} ({env.get(ADMIN_VAR)!r}) must name a port of its own beside LISTEN_ADDR "
                    f"({env.get('LISTEN_ADDR')!r}): the health check (--probe) asks it")
            continue
        for port in service.get("ports", []) or []:
            published = interpolate(str(port)) if not isinstance(port, dict) else str(port.get("target"))
            if published.rsplit(":", 1)[-1].split("/")[0] == str(admin[1]):
                problem(f"{where} publishes its admin port {admin[1]} ({port!r}): metrics and readiness stay unpublished")
        tls = {var: env.get(var) for var in TLS_VARS if env.get(var)}
        if not tls:
            continue
        if len(tls) != len(TLS_VARS):
            problem(f"{where} sets {sorted(tls)}: TLS needs both {' and '.join(TLS_VARS)}")
            continue
        if not service.get("profiles"):
            problem(f"{where} serves TLS without a profile: the default stack must start without a certificate")
        dirs = {str(path).rsplit("/", 1)[0] for path in tls.values()}
        mounted = [(src, ro) for src, target, ro in mounts(service) if target in dirs]
        if len(dirs) != 1 or len(mounted) != 1:
            problem(f"{where}: {' and '.join(TLS_VARS)} must be files of one directory mount (has {tls}, mounts {mounted})")
            continue
        source, read_only = mounted[0]
        if not read_only or not source.startswith("./"):
            problem(f"{where}: the certificate directory must be a host directory ./..., mounted read-only "
                    f"(has {source!r}, read_only {read_only})")
        for path in tls.values():
            host = f"{source[2:].rstrip('/')}/{str(path).rsplit('/', 1)[-1]}"
            if not git_ignored(host):
                problem(f"{where}: {host} is not git-ignored: the pair (its private key) must never be committed")


def mounts(service):
    """[(source, target, read_only)] of a Compose service's volumes, short or long syntax."""
    found = []
    for volume in service.get("volumes", []) or []:
        if isinstance(volume, str):
            parts = volume.split(":")
            found.append((parts[0], parts[1] if len(parts) > 1 else parts[0],
                          len(parts) > 2 and "ro" in parts[2].split(",")))
        else:
            found.append((volume.get("source"), volume.get("target"), bool(volume.get("read_only"))))
    return found


def condition(service, dependency):
    depends = service.get("depends_on") or {}
    return (depends.get(dependency) or {}).get("condition") if isinstance(depends, dict) else None


def image_dir_owner(stages, stage, directory):
    """(uid:gid, mode) with which the runtime `stage` of deploy/Dockerfile gets
    `directory` by a `COPY --from=S --chown=U:G SRC DEST` of a directory that stage S
    makes with `install -d -m MODE -o U -g G`, or None."""
    for line in stages.get(stage, []):
        copy = re.match(r"COPY\s+--from=(\S+)\s+--chown=(\d+:\d+)\s+(\S+)\s+(\S+)$", line)
        if not copy:
            continue
        source_stage, owner, src, dest = copy.groups()
        for made in stages.get(source_stage, []):
            install = re.search(r"install -d -m (\d+) -o (\d+) -g (\d+) (\S+)", made)
            if not install or f"{install.group(2)}:{install.group(3)}" != owner:
                continue
            path = install.group(4)
            if path.startswith(src.rstrip("/") + "/") and dest.rstrip("/") + path[len(src.rstrip("/")):] == directory:
                return owner, install.group(1)
    return None


def check_compose_tokens(services, stages):
    """EdDSA as shipped: a key only svc-users reads, public keys fetched by the verifiers."""
    for name, service in services.items():
        env = service.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
        for var in SHARED_SECRET_VARS:
            if var in env:
                problem(f"compose: {name} sets {var}: Compose runs EdDSA (JWT_SIGNING_KEY / JWT_JWKS_URL)")
    keygen = services.get("keygen")
    if not keygen:
        problem("compose: no one-shot `keygen` service making svc-users' signing key")
        return
    command = keygen.get("command") or []
    if keygen.get("profiles") or len(command) != 2 or command[0] != "--generate-signing-key":
        problem(f"compose: keygen must run `--generate-signing-key PATH` in every profile (has {command!r})")
        return
    key = command[1]
    key_dir = key.rsplit("/", 1)[0]
    if keygen.get("build", {}).get("target") != "svc-users":
        problem("compose: keygen must run the svc-users image (the binary with --generate-signing-key)")
    if keygen.get("restart") != "no":
        problem("compose: keygen is a one-shot: restart \"no\"")
    written = [(src, ro) for src, target, ro in mounts(keygen) if target == key_dir]
    if len(written) != 1 or written[0][1]:
        problem(f"compose: keygen must mount one named volume, writable, at {key_dir}")
        return
    volume = written[0][0]
    if "/" in volume or volume.startswith("."):
        problem(f"compose: keygen writes the key into {volume!r}: a named volume, not a host directory")
    runtime_user = next((line.split()[1] for line in stages.get("runtime", []) if line.startswith("USER ")), None)
    owned = image_dir_owner(stages, "svc-users", key_dir)
    if not owned or owned[0] != runtime_user or owned[1] != "0700":
        problem(f"compose: the svc-users image must have {key_dir} owned by its user {runtime_user} with mode 0700 "
                f"(found {owned!r}): a new named volume copies it, so the non-root keygen can write the key")
    for name in ("svc-users", "seed"):
        service = services.get(name)
        if not service:
            continue
        env = service.get("environment") or {}
        if env.get("JWT_SIGNING_KEY") != key:
            problem(f"compose: {name} must sign with JWT_SIGNING_KEY={key} (has {env.get('JWT_SIGNING_KEY')!r})")
        if "JWT_JWKS_URL" in env:
            problem(f"compose: {name} gets JWT_JWKS_URL, which svc-users refuses")
        if (volume, key_dir, True) not in mounts(service):
            problem(f"compose: {name} must mount the volume {volume} read-only at {key_dir}")
        if condition(service, "keygen") != "service_completed_successfully":
            problem(f"compose: {name} must depend on keygen with condition service_completed_successfully")
    users_port = str((services.get("svc-users", {}).get("environment") or {}).get("LISTEN_ADDR", "")).rsplit(":", 1)[-1]
    jwks_url = f"http://svc-users:{users_port}{JWKS_PATH}"
    for name in VERIFIERS:
        service = services.get(name, {})
        env = service.get("environment") or {}
        if env.get("JWT_JWKS_URL") != jwks_url:
            problem(f"compose: {name} must verify with JWT_JWKS_URL={jwks_url} (has {env.get('JWT_JWKS_URL')!r})")
        for var in SIGNER_VARS:
            if var in env:
                problem(f"compose: {name} gets {var}: a verifier holds no private key and publishes none")
        if any(src == volume for src, _, _ in mounts(service)):
            problem(f"compose: {name} mounts {volume}: only svc-users may read the signing key")
        if condition(service, "svc-users") != "service_healthy":
            problem(f"compose: {name} must depend on svc-users with condition service_healthy (its JWK Set)")
    example = (ROOT / ".env.example").read_text()
    for line in example.splitlines():
        if re.match(r"\s*JWT_\w*\s*=", line):
            problem(f".env.example: {line.split('=')[0].strip()}: no token secret in .env (keygen makes the key)")
    for secret in PUBLISHED_SECRETS:
        if secret in example:
            problem(f".env.example still holds the published placeholder {secret}")


CLUSTER_PROFILE = "rabbitmq-cluster"
CLUSTER_CONF = "deploy/compose/rabbitmq.conf"
AMQP_CLIENTS = ("svc-tasks", "svc-notify")


def amqp_hosts(value):
    """[(host, port)] of a comma-separated AMQP_URL; None if one entry is not an AMQP URL."""
    hosts = []
    for url in filter(None, (part.strip() for part in value.split(","))):
        match = re.fullmatch(r"amqps?://(?:[^@/]*@)?([A-Za-z0-9.-]+):(\d+)(?:/[^,]*)?", url)
        if not match:
            return None
        hosts.append((match.group(1), int(match.group(2))))
    return hosts


def check_compose_rabbitmq(services):
    """The rabbitmq-cluster profile and how svc-tasks and svc-notify find the broker."""
    single = services.get("rabbitmq")
    if not single:
        problem("compose: the single RabbitMQ node `rabbitmq` (the default stack) is missing")
        return
    if single.get("profiles"):
        problem("compose: `rabbitmq` must run without a profile: it is the default stack's broker")
    nodes = {name: service for name, service in services.items() if CLUSTER_PROFILE in (service.get("profiles") or [])}
    if len(nodes) < 3 or len(nodes) % 2 == 0:
        problem(f"compose: the {CLUSTER_PROFILE} profile runs {sorted(nodes)}: an odd number of nodes, at least 3")
    cookies, volumes = set(), set()
    for name, service in sorted(nodes.items()):
        where = f"compose: {name}"
        if service.get("image") != single.get("image"):
            problem(f"{where} runs {service.get('image')!r}, not the single node's image {single.get('image')!r}")
        if service.get("hostname") != name:
            problem(f"{where}: hostname must be {name!r} (the node name rabbit@{name} names its data)")
        env = service.get("environment") or {}
        cookie = str(env.get("RABBITMQ_ERLANG_COOKIE", ""))
        if not re.fullmatch(r"\$\{RABBITMQ_ERLANG_COOKIE(:?-[^}]*)?\}", cookie):
            problem(f"{where}: RABBITMQ_ERLANG_COOKIE must come from .env without `:?` (which would break the "
                    f"default stack), has {cookie!r}")
        cookies.add(cookie)
        data = [src for src, target, _ in mounts(service) if target == "/var/lib/rabbitmq"]
        if len(data) != 1 or "/" in data[0] or data[0] in volumes:
            problem(f"{where}: needs a named volume of its own at /var/lib/rabbitmq (has {data})")
        volumes.update(data)
        conf = [(src, target, ro) for src, target, ro in mounts(service) if src.lstrip("./") == CLUSTER_CONF]
        if len(conf) != 1 or not conf[0][2] or not re.fullmatch(r"/etc/rabbitmq/conf\.d/[\w.-]+\.conf", conf[0][1]):
            problem(f"{where}: must mount ./{CLUSTER_CONF} read-only as /etc/rabbitmq/conf.d/<file>.conf (has {conf})")
        test = " ".join((service.get("healthcheck") or {}).get("test") or [])
        if f"await_online_nodes {len(nodes)}" not in test:
            problem(f"{where}: the health check must wait for the whole cluster (await_online_nodes {len(nodes)})")
        node_depends = service.get("depends_on") or {}
        for dependency, spec in (node_depends.items() if isinstance(node_depends, dict) else []):
            if dependency in nodes and (spec or {}).get("condition") == "service_healthy":
                problem(f"{where} waits for {dependency} to be healthy, which needs {name} up: a deadlock")
    if len(cookies) > 1:
        problem(f"compose: the cluster's nodes take different cookies {sorted(cookies)}")
    conf = (ROOT / CLUSTER_CONF).read_text() if (ROOT / CLUSTER_CONF).exists() else ""
    settings = dict(re.findall(r"^\s*([\w.]+)\s*=\s*(\S+)\s*$", conf, re.MULTILINE))
    if settings.get("cluster_formation.peer_discovery_backend") not in ("classic_config", "rabbit_peer_discovery_classic_config"):
        problem(f"{CLUSTER_CONF}: cluster_formation.peer_discovery_backend must be classic_config")
    listed = {value for key, value in settings.items() if key.startswith("cluster_formation.classic_config.nodes.")}
    if listed != {f"rabbit@{name}" for name in nodes}:
        problem(f"{CLUSTER_CONF} lists {sorted(listed)}, the profile runs {sorted(f'rabbit@{n}' for n in nodes)}")
    user = {"RABBITMQ_USER": "user", "RABBITMQ_PASSWORD": "password"}
    urls = {}
    for client in AMQP_CLIENTS:
        service = services.get(client, {})
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {dependency: {} for dependency in depends}
        urls[client] = str((service.get("environment") or {}).get("AMQP_URL", ""))
        if not urls[client].startswith("${AMQP_URL:-"):
            problem(f"compose: {client}'s AMQP_URL must be ${{AMQP_URL:-<the single node>}} (has {urls[client]!r})")
        single_dep = depends.get("rabbitmq") or {}
        if single_dep.get("condition") != "service_healthy" or single_dep.get("required") is False:
            problem(f"compose: {client} must wait for a healthy `rabbitmq` (the default stack)")
        for node in nodes:
            spec = depends.get(node) or {}
            if spec.get("condition") != "service_healthy" or spec.get("required") is not False:
                problem(f"compose: {client} must wait for {node} (condition service_healthy, required: false)")
    if len(set(urls.values())) > 1:
        problem(f"compose: svc-tasks and svc-notify take different AMQP_URLs {urls}")
    default = interpolate(urls.get("svc-notify", ""), user)
    if amqp_hosts(default) != [("rabbitmq", 5672)]:
        problem(f"compose: without AMQP_URL in .env the services must use the single node, not {default!r}")
    given = interpolate(urls.get("svc-notify", ""), {**user, "AMQP_URL": "amqp://u:p@elsewhere:5672/%2f"})
    if amqp_hosts(given) != [("elsewhere", 5672)]:
        problem("compose: AMQP_URL from .env must reach svc-tasks and svc-notify as it is")
    example = (ROOT / ".env.example").read_text()
    lines = {}
    for line in example.splitlines():
        match = re.match(r"#?\s*([A-Z_]+)=(.*)$", line)
        if match:
            lines.setdefault(match.group(1), match.group(2).strip())
    shown = amqp_hosts(interpolate(lines.get("AMQP_URL", ""), user)) or []
    if sorted(shown) != sorted((node, 5672) for node in nodes):
        problem(f".env.example: the AMQP_URL for the {CLUSTER_PROFILE} profile names {shown}, "
                f"not the nodes {sorted(nodes)} on 5672")
    if CLUSTER_PROFILE not in lines.get("COMPOSE_PROFILES", "").split(","):
        problem(f".env.example: no COMPOSE_PROFILES={CLUSTER_PROFILE} line for the cluster")
    if "RABBITMQ_ERLANG_COOKIE" not in lines:
        problem(".env.example: no RABBITMQ_ERLANG_COOKIE line for the cluster")


TRACING_COMPONENT = "deploy/k8s/components/tracing"
COLLECTOR = "otel-collector"
COLLECTOR_IMAGE = "otel/opentelemetry-collector:"
TRACES_SECTION = "Traces (OpenTelemetry)"


def url_port(url):
    """(scheme, host, port) of an http(s) URL, the port defaulting by scheme; or None."""
    match = re.fullmatch(r"(https?)://([A-Za-z0-9.-]+)(?::(\d+))?(/\S*)?", str(url or ""))
    if not match:
        return None
    return match.group(1), match.group(2), int(match.group(3) or (443 if match.group(1) == "https" else 80))


def selects_name(selector, name):
    """Whether a NetworkPolicy podSelector (matchLabels only, as this repository writes
    them) selects the pods app.kubernetes.io/name=`name`; an empty one selects all."""
    labels = (selector or {}).get("matchLabels") or {}
    return not (selector or {}).get("matchExpressions") and labels.get("app.kubernetes.io/name", name) == name \
        and set(labels) <= {"app.kubernetes.io/name"}


def check_tracing(paths):
    if not paths:
        problem("tracing: no rendered example given")
        return
    traced, plain = paths[0], paths[1:]
    docs = [doc for _, doc in documents([traced])]
    kinds = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    where = f"k8s {Path(traced).stem}"
    component = yaml.safe_load((ROOT / TRACING_COMPONENT / "kustomization.yaml").read_text()) or {}
    if component.get("kind") != "Component" or component.get("apiVersion") != "kustomize.config.k8s.io/v1alpha1":
        problem(f"{TRACING_COMPONENT}: must be a kustomize Component (kustomize.config.k8s.io/v1alpha1)")
    deployment, service = kinds.get(("Deployment", COLLECTOR)), kinds.get(("Service", COLLECTOR))
    if not deployment or not service:
        problem(f"{where}: no Deployment and Service {COLLECTOR}")
        return
    namespace = deployment["metadata"].get("namespace")
    pod = deployment["spec"]["template"]["spec"]
    container = next((c for c in pod["containers"] if c["name"] == COLLECTOR), None)
    if container is None:
        problem(f"{where}: the Deployment {COLLECTOR} has no container {COLLECTOR}")
        return
    named = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}

    def resolve(port):
        return named.get(port) if isinstance(port, str) else port

    # The image and the hardening of deploy/k8s/base.
    image = container.get("image", "")
    if not image.startswith(COLLECTOR_IMAGE) or not DIGEST.search(image):
        problem(f"{where}: {COLLECTOR} must run the core image {COLLECTOR_IMAGE}<version>@sha256:… (has {image!r})")
    security = container.get("securityContext") or {}
    pod_security = pod.get("securityContext") or {}
    if not (security.get("runAsNonRoot") or pod_security.get("runAsNonRoot")) \
            or security.get("readOnlyRootFilesystem") is not True or security.get("allowPrivilegeEscalation") is not False \
            or "ALL" not in ((security.get("capabilities") or {}).get("drop") or []) \
            or ((security.get("seccompProfile") or pod_security.get("seccompProfile") or {}).get("type") != "RuntimeDefault"):
        problem(f"{where}: {COLLECTOR} must run as non-root, read-only root filesystem, no privilege escalation, "
                f"all capabilities dropped, seccomp RuntimeDefault (has {security})")
    resources = container.get("resources") or {}
    if not all((resources.get(kind) or {}).get(r) for kind in ("requests", "limits") for r in ("cpu", "memory")):
        problem(f"{where}: {COLLECTOR} needs CPU and memory requests and limits")
    account = kinds.get(("ServiceAccount", pod.get("serviceAccountName")))
    if pod.get("automountServiceAccountToken") is not False or not account \
            or account.get("automountServiceAccountToken") is not False:
        problem(f"{where}: {COLLECTOR} needs a ServiceAccount of its own and no service account token")

    # Its configuration: the file --config names, from the ConfigMap mounted there.
    config_path = next((a.split("=", 1)[1] for a in (container.get("args") or []) + (container.get("command") or [])
                        if a.startswith("--config=")), None)
    mount = next((m for m in container.get("volumeMounts", [])
                  if config_path and config_path.startswith(m["mountPath"].rstrip("/") + "/")), None)
    volume = next((v for v in pod.get("volumes", []) if mount and v["name"] == mount["name"]), {})
    config_map = kinds.get(("ConfigMap", (volume.get("configMap") or {}).get("name")))
    key = config_path[len(mount["mountPath"].rstrip("/")) + 1:] if mount else None
    if not config_map or key not in (config_map.get("data") or {}) or not mount.get("readOnly"):
        problem(f"{where}: {COLLECTOR}'s --config ({config_path!r}) must be a file of a ConfigMap mounted read-only")
        return
    config = yaml.safe_load(config_map["data"][key]) or {}
    pipeline = ((config.get("service") or {}).get("pipelines") or {}).get("traces") or {}
    http = ((((config.get("receivers") or {}).get("otlp") or {}).get("protocols") or {}).get("http") or {})
    received = addr_port(http.get("endpoint"))
    ports = {p["port"]: resolve(p.get("targetPort", p["port"])) for p in service["spec"].get("ports", [])}
    if "otlp" not in (pipeline.get("receivers") or []) or not received or received[0] not in ("0.0.0.0", "::") \
            or ports.get(OTLP_HTTP_PORT) != received[1]:
        problem(f"{where}: {COLLECTOR} must receive OTLP/HTTP (receivers.otlp.protocols.http) on all interfaces, on the "
                f"port the Service's {OTLP_HTTP_PORT} targets (listens {http.get('endpoint')!r}, Service {ports})")
    processors = pipeline.get("processors") or []
    if processors[:1] != ["memory_limiter"] or "batch" not in processors:
        problem(f"{where}: the traces pipeline's processors must start with memory_limiter and include batch (has {processors})")
    exporters = pipeline.get("exporters") or []
    backends = [e for e in exporters if e.split("/")[0] == "otlphttp"]
    if "debug" not in exporters or len(backends) != 1:
        problem(f"{where}: the traces pipeline must export to debug and to one otlphttp backend (has {exporters})")
    else:
        endpoint = str(((config.get("exporters") or {}).get(backends[0]) or {}).get("endpoint", ""))
        variable = re.fullmatch(r"\$\{env:(\w+)\}", endpoint)
        backend = container_env(container, kinds).get(variable.group(1)) if variable else None
        if not url_port(backend):
            problem(f"{where}: {backends[0]}'s endpoint must be ${{env:VAR}}, VAR an http(s) URL from the collector's "
                    f"ConfigMap (has {endpoint!r} = {backend!r})")
        else:
            check_tracing_policies(where, docs, url_port(backend)[2])
    health = addr_port(((config.get("extensions") or {}).get("health_check") or {}).get("endpoint"))
    for probe in ("livenessProbe", "readinessProbe"):
        get = (container.get(probe) or {}).get("httpGet") or {}
        if not health or "health_check" not in ((config.get("service") or {}).get("extensions") or []) \
                or health[0] not in ("0.0.0.0", "::") or resolve(get.get("port")) != health[1]:
            problem(f"{where}: {COLLECTOR}'s {probe} must GET the health_check extension's port, on all interfaces "
                    f"(probes {get}, extension {health})")

    # The four apps export to the Service, with a parent-based ratio sampler.
    expected = f"http://{COLLECTOR}.{namespace}.svc.cluster.local:{OTLP_HTTP_PORT}"
    samplers = set()
    for app in APPS:
        app_deployment = kinds.get(("Deployment", app))
        if not app_deployment:
            problem(f"{where}: no Deployment {app}")
            continue
        app_container = next(c for c in app_deployment["spec"]["template"]["spec"]["containers"] if c["name"] == app)
        env = container_env(app_container, kinds)
        if env.get(ENDPOINT_VAR) != expected:
            problem(f"{where}: {app} must export with {ENDPOINT_VAR}={expected} (has {env.get(ENDPOINT_VAR)!r})")
        sampler, ratio = env.get("OTEL_TRACES_SAMPLER"), env.get("OTEL_TRACES_SAMPLER_ARG")
        try:
            ratio_ok = 0 < float(ratio) <= 1
        except (TypeError, ValueError):
            ratio_ok = False
        if sampler != "parentbased_traceidratio" or not ratio_ok:
            problem(f"{where}: {app} must sample with parentbased_traceidratio and a ratio in (0, 1] "
                    f"(has {sampler!r}, {ratio!r})")
        samplers.add((sampler, ratio))

    # Off by default: no overlay runs a collector or exports, none lists the component.
    for path in plain:
        overlay = Path(path).stem
        plain_docs = [d for _, d in documents([path])]
        plain_kinds = {(d["kind"], d["metadata"]["name"]): d for d in plain_docs}
        for doc in plain_docs:
            if doc["metadata"]["name"] == COLLECTOR:
                problem(f"k8s {overlay}: has {doc['kind']} {COLLECTOR}: tracing is off unless an overlay adds the component")
            if doc["kind"] == "Deployment":
                for c in doc["spec"]["template"]["spec"]["containers"]:
                    if ENDPOINT_VAR in container_env(c, plain_kinds):
                        problem(f"k8s {overlay}: {doc['metadata']['name']} gets {ENDPOINT_VAR}: tracing is off by default")
    for kustomization in sorted((ROOT / "deploy/k8s/overlays").rglob("kustomization.yaml")):
        listed = yaml.safe_load(kustomization.read_text()) or {}
        if any("components/tracing" in str(entry) for entry in (listed.get("components") or []) + (listed.get("resources") or [])):
            problem(f"{kustomization.relative_to(ROOT)} includes the tracing component: it stays off by default")

    # The documentation.
    section = markdown_section((ROOT / "deploy/README.md").read_text(), TRACES_SECTION) or ""
    if not section:
        problem(f"deploy/README.md has no section {TRACES_SECTION!r}")
    needed = ["components/tracing", "TRACES_BACKEND_ENDPOINT", "otel_spans_dropped_total", "http://127.0.0.1:16686",
              "POST tasks", "todo-standalone", ENDPOINT_VAR]
    needed += [f"OTEL_TRACES_SAMPLER={s}" for s, _ in samplers] + [f"OTEL_TRACES_SAMPLER_ARG={r}" for _, r in samplers]
    for text in needed:
        if section and text not in section:
            problem(f"deploy/README.md, {TRACES_SECTION!r}: does not mention {text!r}")


def check_tracing_policies(where, docs, backend_port):
    """The four apps reach the collector on 4318, nobody else may; it reaches DNS and the
    backend's port."""
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    for app in APPS:
        if not allows(policies, app, "egress", COLLECTOR, OTLP_HTTP_PORT):
            problem(f"{where}: no NetworkPolicy lets {app} reach {COLLECTOR}:{OTLP_HTTP_PORT}")
        if not allows(policies, COLLECTOR, "ingress", app, OTLP_HTTP_PORT):
            problem(f"{where}: no NetworkPolicy lets {COLLECTOR} accept {app} on {OTLP_HTTP_PORT}")
    own = [p for p in policies if selects_name(p["spec"]["podSelector"], COLLECTOR)]
    for policy in own:
        for rule in policy["spec"].get("ingress", []) or []:
            ports = rule.get("ports")
            if ports is not None and not any(p.get("port") == OTLP_HTTP_PORT for p in ports):
                continue
            peers = rule.get("from")
            names = [((peer.get("podSelector") or {}).get("matchLabels") or {}).get("app.kubernetes.io/name")
                     if set(peer) == {"podSelector"} else None for peer in peers or []]
            if not peers or any(name not in APPS for name in names):
                problem(f"{where}: NetworkPolicy {policy['metadata']['name']} opens {COLLECTOR}:{OTLP_HTTP_PORT} to "
                        f"{peers or 'anyone'}: the four apps only")

    def egress(port, protocol="TCP"):
        return any(rule.get("ports") is None or any(p.get("port") == port and p.get("protocol", "TCP") == protocol
                                                     for p in rule["ports"])
                   for policy in own for rule in policy["spec"].get("egress", []) or [])

    if not egress(53, "UDP"):
        problem(f"{where}: no NetworkPolicy lets {COLLECTOR} reach DNS (UDP 53)")
    if not egress(backend_port):
        problem(f"{where}: no NetworkPolicy lets {COLLECTOR} reach its backend's port {backend_port}")


EXAMPLE_CLUSTER = "deploy/k8s/examples/rabbitmq-cluster.yaml"
MIGRATE_SCRIPT = "deploy/k8s/migrate-to-quorum.sh"
TOPOLOGY_RS = "svc-notify/src/consumer/topology.rs"


def reaches(policies, client, namespace, name, port):
    """Whether a NetworkPolicy lets pods `client` (app.kubernetes.io/name) open TCP `port`
    to the pods app.kubernetes.io/name=`name` in `namespace`."""
    for policy in policies:
        spec = policy["spec"]
        if spec["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") != client:
            continue
        for rule in spec.get("egress", []) or []:
            peer_ok = any(
                (peer.get("namespaceSelector") or {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") == namespace
                and (peer.get("podSelector") or {}).get("matchLabels", {}).get("app.kubernetes.io/name") == name
                for peer in rule.get("to") or [])
            ports = rule.get("ports")
            if peer_ok and (ports is None or any(p.get("port") == port and p.get("protocol", "TCP") == "TCP" for p in ports)):
                return True
    return False


def markdown_section(text, heading):
    """The body of the markdown section titled `heading` (any level), or None."""
    match = re.search(rf"^(#+) {re.escape(heading)}\s*$", text, re.MULTILINE)
    if not match:
        return None
    level = len(match.group(1))
    rest = text[match.end():]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.MULTILINE)
    return rest[:end.start()] if end else rest


def check_broker(paths):
    if not paths:
        problem("broker: no rendered overlays given")
    readme = (ROOT / "deploy/README.md").read_text()
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    compose_image = compose["services"].get("rabbitmq", {}).get("image")
    clusters = [doc for _, doc in documents([ROOT / EXAMPLE_CLUSTER]) if doc.get("kind") == "RabbitmqCluster"]
    if len(clusters) != 1:
        problem(f"{EXAMPLE_CLUSTER}: expected one RabbitmqCluster, found {len(clusters)}")
        return
    cluster = clusters[0]
    name, namespace = cluster["metadata"]["name"], cluster["metadata"].get("namespace")
    spec = cluster.get("spec") or {}
    replicas = spec.get("replicas", 1)
    if cluster.get("apiVersion") != "rabbitmq.com/v1beta1":
        problem(f"{EXAMPLE_CLUSTER}: apiVersion {cluster.get('apiVersion')!r}, the operator's is rabbitmq.com/v1beta1")
    if not isinstance(replicas, int) or replicas < 3 or replicas % 2 == 0:
        problem(f"{EXAMPLE_CLUSTER}: replicas {replicas!r}: an odd number, at least 3, so a majority survives a lost node")
    if spec.get("image") != compose_image:
        problem(f"{EXAMPLE_CLUSTER}: image {spec.get('image')!r} is not compose.yaml's {compose_image!r}")
    terms = (((spec.get("affinity") or {}).get("podAntiAffinity") or {})
             .get("requiredDuringSchedulingIgnoredDuringExecution") or [])
    if not any(term.get("topologyKey") == "kubernetes.io/hostname"
               and term.get("labelSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == name
               for term in terms):
        problem(f"{EXAMPLE_CLUSTER}: no required pod anti-affinity on kubernetes.io/hostname for "
                f"app.kubernetes.io/name={name}: two nodes on one machine could go together")
    for kustomization in sorted((ROOT / "deploy").rglob("kustomization.yaml")):
        listed = yaml.safe_load(kustomization.read_text()) or {}
        for entry in (listed.get("resources") or []) + (listed.get("components") or []):
            if "examples" in str(entry):
                problem(f"{kustomization.relative_to(ROOT)} applies {entry}: the examples stay outside the overlays")
    for path in paths:
        docs = [doc for _, doc in documents([path])]
        overlay = Path(path).stem
        policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
        for client in AMQP_CLIENTS:
            if not reaches(policies, client, namespace, name, 5672):
                problem(f"k8s {overlay}: no NetworkPolicy lets {client} reach the pods of the RabbitmqCluster "
                        f"{name} (app.kubernetes.io/name={name}) in {namespace} on 5672")
        check_migration_job(overlay, docs)
    expected = sorted((f"{name}-server-{i}.{name}-nodes.{namespace}.svc", 5672) for i in range(replicas if isinstance(replicas, int) else 0))
    shown = [sorted(amqp_hosts(value) or []) for value in re.findall(r"AMQP_URL=(\S+)", readme)]
    if expected not in shown:
        problem(f"deploy/README.md shows no AMQP_URL listing the operator's per-pod names {[h for h, _ in expected]} on 5672")
    check_broker_docs(readme)


def check_migration_job(overlay, docs):
    """deploy/k8s/migrate-to-quorum.sh --job, on the rendered svc-notify Deployment."""
    deployment = next((d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "svc-notify"), None)
    if deployment is None:
        problem(f"k8s {overlay}: no Deployment svc-notify")
        return
    image = "registry.example/todo/svc-notify@sha256:" + "ab" * 32
    built = subprocess.run(["bash", str(ROOT / MIGRATE_SCRIPT), "--job", image], input=json.dumps(deployment),
                           capture_output=True, text=True)
    if built.returncode != 0:
        problem(f"{MIGRATE_SCRIPT} --job failed on the {overlay} svc-notify Deployment: {built.stderr.strip()}")
        return
    job = json.loads(built.stdout)
    where = f"{MIGRATE_SCRIPT} ({overlay})"
    pod = job["spec"]["template"]["spec"]
    source = deployment["spec"]["template"]["spec"]
    container = next(c for c in source["containers"] if c["name"] == "svc-notify")
    migrate = pod["containers"]
    if len(migrate) != 1:
        problem(f"{where}: the Job must run one container, has {len(migrate)}")
        return
    migrate = migrate[0]
    if job.get("kind") != "Job" or pod.get("restartPolicy") != "Never":
        problem(f"{where}: not a Job with restartPolicy Never")
    if migrate.get("image") != image or migrate.get("args") != ["--migrate-to-quorum"] or migrate.get("command"):
        problem(f"{where}: the Job must run the given image with args [--migrate-to-quorum] (has "
                f"{migrate.get('image')!r}, {migrate.get('command')!r} {migrate.get('args')!r})")
    for key in ("env", "envFrom", "volumeMounts", "securityContext", "resources"):
        if migrate.get(key) != container.get(key):
            problem(f"{where}: the Job's container {key} differs from the svc-notify Deployment's")
    for key in ("serviceAccountName", "securityContext", "volumes", "automountServiceAccountToken"):
        if pod.get(key) != source.get(key):
            problem(f"{where}: the Job's pod {key} differs from the svc-notify Deployment's")
    for key in ("ports", "startupProbe", "livenessProbe", "readinessProbe", "lifecycle"):
        if key in migrate:
            problem(f"{where}: the Job's container keeps {key}")
    labels = job["spec"]["template"]["metadata"].get("labels", {})
    service_selector = deployment["spec"]["selector"].get("matchLabels", {})
    if labels.get("app.kubernetes.io/name") != "svc-notify":
        problem(f"{where}: the Job's pod must be app.kubernetes.io/name=svc-notify (its NetworkPolicy reaches RabbitMQ)")
    if labels.get("app.kubernetes.io/component") in (None, deployment["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")):
        problem(f"{where}: the Job's pod needs a component label of its own (the script waits for the Deployment's pods)")
    if job["metadata"].get("namespace") != deployment["metadata"].get("namespace"):
        problem(f"{where}: the Job is not in the Deployment's namespace")
    if not service_selector:
        problem(f"k8s {overlay}: the svc-notify Deployment has no selector")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(job, f)
        f.flush()
        for version in (["-k", "1.31.0"], []):
            checked = subprocess.run(["kubernetes-validate", "--strict", "--quiet", *version, f.name],
                                     capture_output=True, text=True)
            if checked.returncode != 0:
                problem(f"{where}: kubernetes-validate --strict {' '.join(version)} refuses the Job:\n"
                        f"{checked.stdout}{checked.stderr}")


def check_broker_docs(readme):
    """The refusal names a section that exists and says what to do; the docs state the
    queue arguments the code declares."""
    topology = (ROOT / TOPOLOGY_RS).read_text()
    named = re.search(r'deploy/README\.md, \\"([^"\\]+)\\"', topology)
    if not named:
        problem(f"{TOPOLOGY_RS}: the incompatible-queue message names no deploy/README.md section")
    else:
        section = markdown_section(readme, named.group(1))
        if section is None:
            problem(f"deploy/README.md has no section {named.group(1)!r}, which svc-notify's refusal names")
        else:
            for needed in ("svc-notify --migrate-to-quorum", "docker compose run --rm svc-notify --migrate-to-quorum",
                           MIGRATE_SCRIPT, "scale", "Publishers need not stop"):
                if needed not in section:
                    problem(f"deploy/README.md, {named.group(1)!r}: does not mention {needed!r}")
    limit = re.search(r"pub const DELIVERY_LIMIT: i64 = (\d+);", topology)
    limit = int(limit.group(1)) if limit else None
    declared = {"x-queue-type": "quorum", "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish", "x-delivery-limit": limit}
    for key, value in declared.items():
        if f'"{key}"' not in topology or (key != "x-delivery-limit" and f'"{value}"' not in topology):
            problem(f"{TOPOLOGY_RS} no longer declares {key}: {value}: update this check and the docs")
    events = (yaml.safe_load((ROOT / "openapi.yaml").read_text()).get("x-events") or {})
    arguments = ((events.get("queue") or {}).get("arguments") or {})
    for key, value in declared.items():
        if arguments.get(key) != value:
            problem(f"openapi.yaml x-events.queue.arguments.{key} is {arguments.get(key)!r}, the code declares {value!r}")
        if f"`{key}: {value}`" not in readme:
            problem(f"deploy/README.md does not state the queue argument `{key}: {value}`")
    dead = ((events.get("queue") or {}).get("deadLetterQueue") or {}).get("arguments") or {}
    if dead.get("x-queue-type") != "quorum":
        problem("openapi.yaml x-events.queue.deadLetterQueue: not a quorum queue")
    description = yaml.safe_load((ROOT / "openapi.yaml").read_text())["info"]["description"]
    for needed in ("quorum queue", "at least once", "AMQP_URL", "comma-separated", "event id"):
        if needed not in description:
            problem(f"openapi.yaml, the event section of info.description: does not say {needed!r}")
    top = (ROOT / "README.md").read_text()
    row = next((line for line in top.splitlines() if line.startswith("| `AMQP_URL` |")), "")
    if "comma" not in row:
        problem("README.md: the AMQP_URL row does not say it takes several comma-separated URLs")
    for needed in ("quorum queue", "--migrate-to-quorum", CLUSTER_PROFILE):
        if needed not in top:
            problem(f"README.md does not mention {needed!r}")
    if "WriteConcern::majority()" not in (ROOT / "common/src/mongo.rs").read_text() or "majority write concern" not in readme:
        problem("MongoDB writes must use majority write concern explicitly (common/src/mongo.rs), and deploy/README.md say so")


def check_dockerfile():
    text = (ROOT / "deploy/Dockerfile").read_text()
    first = text.splitlines()[0]
    if not re.fullmatch(r"# syntax=docker/dockerfile:[\w.]+@sha256:[0-9a-f]{64}", first):
        problem(f"Dockerfile: the frontend line is not pinned by digest: {first!r}")
    stages = dockerfile_stages()
    names = set(stages)
    for stage, lines in stages.items():
        base = lines[0].split()[1]
        if base not in names and not DIGEST.search(base):
            problem(f"Dockerfile: stage {stage}: base image {base} is not pinned by digest")
    if not re.search(r"cargo install cargo-auditable --locked --version \"\$\{CARGO_AUDITABLE_VERSION\}\"", text) or \
            not re.search(r"^ARG CARGO_AUDITABLE_VERSION=\d+\.\d+\.\d+$", text, re.MULTILINE):
        problem("Dockerfile: cargo-auditable must be installed --locked at a pinned version")
    for app in APPS:
        build = stages.get(f"build-{app}", [])
        if not any(re.search(rf"cargo auditable build --release --locked -p {app}\b", line) for line in build):
            problem(f"Dockerfile: build-{app} does not run `cargo auditable build --release --locked -p {app}`")
        runtime = stages.get(app, [])
        binary = f"/usr/local/bin/{app}"
        if not any(line.startswith("HEALTHCHECK") and f'CMD ["{binary}", "--probe"]' in line for line in runtime):
            problem(f"Dockerfile: target {app} has no HEALTHCHECK running {binary} --probe")
    # The edge's --probe asks its admin listener, and Prometheus reaches it on the pod's
    # address: all interfaces of the container, a port of its own, EXPOSEd.
    edge = " ".join(line for line in stages.get("edge", []) if line.startswith(("ENV ", "EXPOSE ")))
    admin = re.search(rf"\b{ADMIN_VAR}=(\S+)", edge)
    listen = re.search(r"\bLISTEN_ADDR=(\S+)", edge)
    admin, listen = addr_port(admin and admin.group(1)), addr_port(listen and listen.group(1))
    exposed = {int(port.split("/")[0]) for line in stages.get("edge", []) if line.startswith("EXPOSE ")
               for port in line.split()[1:]}
    if not admin or admin[0] not in ("0.0.0.0", "::") or (listen and admin[1] == listen[1]):
        problem(f"Dockerfile: target edge must set {ADMIN_VAR}=0.0.0.0:<port of its own> (has {admin!r})")
    elif admin[1] not in exposed:
        problem(f"Dockerfile: target edge does not EXPOSE its admin port {admin[1]}")


def documents(paths):
    for path in paths:
        for doc in yaml.safe_load_all(Path(path).read_text()):
            if doc:
                yield path, doc


def check_k8s(paths):
    if not paths:
        problem("k8s: no rendered overlays given")
    for path in paths:
        docs = [doc for _, doc in documents([path])]
        kinds = {(d["kind"], d["metadata"]["name"]): d for d in docs}
        overlay = Path(path).stem
        for doc in docs:
            if doc["kind"] != "HorizontalPodAutoscaler":
                continue
            target = doc["spec"]["scaleTargetRef"]
            deployment = kinds.get((target["kind"], target["name"]))
            if deployment is None:
                problem(f"k8s {overlay}: HPA {doc['metadata']['name']} targets a missing {target['kind']} {target['name']}")
            elif "replicas" in deployment["spec"]:
                problem(f"k8s {overlay}: Deployment {target['name']} sets replicas, but HPA "
                        f"{doc['metadata']['name']} owns the count")
        policies = kinds.get(("ConfigMap", "edge-policies"))
        if not policies:
            problem(f"k8s {overlay}: ConfigMap edge-policies missing")
            continue
        upstreams = tomllib.loads(policies["data"]["upstreams.toml"])["upstreams"]
        for upstream, spec in upstreams.items():
            for address in spec["addresses"]:
                host = address.rsplit(":", 1)[0]
                match = re.fullmatch(r"([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local", host)
                if not match:
                    problem(f"k8s {overlay}: upstream {upstream} address {address} is not a Service DNS name")
                    continue
                service = kinds.get(("Service", match.group(1)))
                if service is None or service["metadata"].get("namespace") != match.group(2):
                    problem(f"k8s {overlay}: upstream {upstream}: no Service {match.group(1)} in namespace {match.group(2)}")
                elif service["spec"].get("clusterIP") != "None":
                    problem(f"k8s {overlay}: Service {match.group(1)} (upstream {upstream}) must be headless "
                            "(clusterIP: None) so the edge sees every pod")
        if overlay == "prod":
            for doc in docs:
                if doc["kind"] != "Deployment":
                    continue
                for container in doc["spec"]["template"]["spec"]["containers"]:
                    if not DIGEST.search(container["image"]):
                        problem(f"k8s prod: {doc['metadata']['name']} image {container['image']} is not pinned by digest")
        check_k8s_tokens(overlay, docs, kinds)
        check_k8s_edge(overlay, docs, kinds)
    # Files git ignores (the Compose TLS profile's pair in deploy/compose/tls/) are never
    # committed: skipped. Untracked ones are checked before they are added.
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard",
                             "--", "deploy"], capture_output=True, text=True)
    paths = (sorted(ROOT / name for name in listed.stdout.split("\0") if name) if listed.returncode == 0
             else sorted((ROOT / "deploy").rglob("*")))
    for path in paths:
        if path.is_file() and "PRIVATE KEY-----" in path.read_text(errors="replace"):
            problem(f"{path.relative_to(ROOT)} holds a private key: keys are created outside git")


def container_env(container, kinds):
    """{name: value} of a container's environment as far as the rendered manifests say:
    literal values, ConfigMap references (envFrom and configMapKeyRef) resolved, $(VAR)
    expanded; a Secret reference reads as "secret:NAME/KEY", a missing optional one is
    left out."""
    env = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            config = kinds.get(("ConfigMap", source["configMapRef"]["name"]))
            env.update((config or {}).get("data", {}))
        elif "secretRef" in source:
            env["secretRef:" + source["secretRef"]["name"]] = "secret"
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = re.sub(r"\$\((\w+)\)", lambda m: str(env.get(m.group(1), m.group(0))), var["value"])
        elif "configMapKeyRef" in var.get("valueFrom", {}):
            ref = var["valueFrom"]["configMapKeyRef"]
            data = (kinds.get(("ConfigMap", ref["name"])) or {}).get("data", {})
            if ref["key"] in data:
                env[var["name"]] = data[ref["key"]]
            elif not ref.get("optional"):
                problem(f"ConfigMap {ref['name']} lacks the key {ref['key']} that {container['name']} needs")
        elif "secretKeyRef" in var.get("valueFrom", {}):
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = f"secret:{ref['name']}/{ref['key']}"
    return env


def allows(policies, pod, direction, peer, port):
    """Whether a NetworkPolicy selecting `pod` lets traffic of `direction` (ingress: from
    `peer`; egress: to `peer`) through on TCP `port`; pods are named by their
    app.kubernetes.io/name label, in the policies' namespace."""
    for policy in policies:
        spec = policy["spec"]
        selected = spec["podSelector"].get("matchLabels", {})
        if selected and selected.get("app.kubernetes.io/name") != pod:
            continue
        for rule in spec.get(direction, []) or []:
            peers = rule.get("from" if direction == "ingress" else "to")
            ports = rule.get("ports")
            peer_ok = peers is None or any(
                "namespaceSelector" not in p and "ipBlock" not in p
                and p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == peer
                for p in peers)
            port_ok = ports is None or any(p.get("port") == port and p.get("protocol", "TCP") == "TCP" for p in ports)
            if peer_ok and port_ok:
                return True
    return False


def check_k8s_tokens(overlay, docs, kinds):
    """EdDSA as shipped: svc-users' key a read-only Secret file; the verifiers hold none."""
    where = f"k8s {overlay}"
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    users_service = kinds.get(("Service", "svc-users"))
    if not users_service:
        problem(f"{where}: no Service svc-users")
        return
    namespace = users_service["metadata"].get("namespace")
    users_port = users_service["spec"]["ports"][0]["port"]
    jwks_url = f"http://svc-users.{namespace}.svc.cluster.local:{users_port}{JWKS_PATH}"
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            env = container_env(container, kinds)
            for var in SHARED_SECRET_VARS:
                if var in env:
                    problem(f"{where}: {name} gets {var}: the deployments run EdDSA")
            if name == "svc-users":
                if "JWT_JWKS_URL" in env:
                    problem(f"{where}: svc-users gets JWT_JWKS_URL, which it refuses (it signs)")
                key = env.get("JWT_SIGNING_KEY", "")
                mount = next((m for m in container.get("volumeMounts", [])
                              if key.startswith(m["mountPath"].rstrip("/") + "/")), None)
                secret = volumes.get(mount["name"], {}).get("secret") if mount else None
                if "$(" in key or not mount or not secret or not mount.get("readOnly"):
                    problem(f"{where}: svc-users' JWT_SIGNING_KEY ({key!r}) must be a file of a Secret volume "
                            "mounted read-only")
                # During a rotation: every published public key is a file of a mounted ConfigMap.
                for pair in filter(None, env.get("JWT_PREVIOUS_PUBLIC_KEYS", "").split(",")):
                    path = pair.split("=", 1)[-1].strip()
                    mount = next((m for m in container.get("volumeMounts", [])
                                  if path.startswith(m["mountPath"].rstrip("/") + "/")), None)
                    config = volumes.get(mount["name"], {}).get("configMap") if mount else None
                    data = (kinds.get(("ConfigMap", config["name"])) or {}).get("data", {}) if config else {}
                    if path.rsplit("/", 1)[-1] not in data:
                        problem(f"{where}: JWT_PREVIOUS_PUBLIC_KEYS names {path}, which no mounted ConfigMap holds")
            elif name in VERIFIERS:
                if env.get("JWT_JWKS_URL") != jwks_url:
                    problem(f"{where}: {name} must verify with JWT_JWKS_URL={jwks_url} (has {env.get('JWT_JWKS_URL')!r})")
                for var in SIGNER_VARS:
                    if var in env:
                        problem(f"{where}: {name} gets {var}: a verifier holds no private key")
                for var, value in env.items():
                    if var.startswith("JWT_") and str(value).startswith("secret:"):
                        problem(f"{where}: {name} takes {var} from a Secret: a verifier needs no token secret")
                # The edge's TLS pair (a Secret volume holding EDGE_TLS_CERT and
                # EDGE_TLS_KEY) is no token key.
                tls_volumes = {m["name"] for m in container.get("volumeMounts", [])
                               for var in TLS_VARS if str(env.get(var, "")).startswith(m["mountPath"].rstrip("/") + "/")}
                secrets = [v["name"] for v in volumes.values()
                           if ("secret" in v or "projected" in v) and v["name"] not in tls_volumes]
                if secrets:
                    problem(f"{where}: {name} mounts Secret volumes {secrets}: only svc-users holds a key")
    for doc in docs:
        if doc["kind"] != "Secret":
            continue
        for key, value in {**doc.get("data", {}), **doc.get("stringData", {})}.items():
            try:
                text = base64.b64decode(value).decode(errors="replace") if key in doc.get("data", {}) else value
            except ValueError:
                text = value
            if key.startswith("JWT_") or "PRIVATE KEY" in text or any(s in text for s in PUBLISHED_SECRETS):
                problem(f"{where}: Secret {doc['metadata']['name']} key {key}: no token key or secret is "
                        "generated from the repository")
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    for verifier in VERIFIERS:
        if not allows(policies, verifier, "egress", "svc-users", users_port):
            problem(f"{where}: no NetworkPolicy lets {verifier} reach svc-users:{users_port} (its JWK Set)")
        if not allows(policies, "svc-users", "ingress", verifier, users_port):
            problem(f"{where}: no NetworkPolicy lets svc-users accept {verifier} on {users_port} (its JWK Set)")


def selects(selector, labels):
    """Whether a label selector (matchLabels, or a Service's plain map) matches `labels`."""
    wanted = selector.get("matchLabels", selector) if isinstance(selector, dict) else {}
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def check_k8s_edge(overlay, docs, kinds):
    """The edge: probes and scraping on its plain-HTTP admin port, which the public
    Service does not expose and only Prometheus reaches; TLS from a Secret directory."""
    where = f"k8s {overlay}: edge"
    deployment = kinds.get(("Deployment", "edge"))
    if not deployment:
        problem(f"k8s {overlay}: no Deployment edge")
        return
    template = deployment["spec"]["template"]
    pod, pod_labels = template["spec"], template["metadata"].get("labels", {})
    namespace = deployment["metadata"].get("namespace")
    container = next((c for c in pod["containers"] if c["name"] == "edge"), None)
    if container is None:
        problem(f"{where}: no container edge")
        return
    env = container_env(container, kinds)
    admin, listen = addr_port(env.get(ADMIN_VAR)), addr_port(env.get("LISTEN_ADDR"))
    if not admin or admin[0] not in ("0.0.0.0", "::") or not listen or admin[1] == listen[1]:
        problem(f"{where}: {ADMIN_VAR} must be 0.0.0.0:<a port of its own> for the kubelet and Prometheus "
                f"(has {env.get(ADMIN_VAR)!r}, LISTEN_ADDR {env.get('LISTEN_ADDR')!r})")
        return
    admin_port, public_port = admin[1], listen[1]
    named = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}

    def resolve(port):
        return named.get(port) if isinstance(port, str) else port

    if named.get("admin") != admin_port:
        problem(f"{where}: needs a container port named admin = {admin_port} (has {named})")
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = (container.get(probe) or {}).get("httpGet") or {}
        if get.get("path") != path or resolve(get.get("port")) != admin_port or get.get("scheme", "HTTP") != "HTTP":
            problem(f"{where}: {probe} must GET {path} on the admin port {admin_port} over plain HTTP (has {get})")
    annotations = template["metadata"].get("annotations", {})
    if annotations.get("prometheus.io/port") != str(admin_port) or annotations.get("prometheus.io/path") != "/metrics":
        problem(f"{where}: prometheus.io/port and path must name the admin listener {admin_port} /metrics "
                f"(has {annotations.get('prometheus.io/port')!r} {annotations.get('prometheus.io/path')!r})")

    # Services: the public one without the admin port; the admin port only on ClusterIP
    # Services of its own, which the ServiceMonitor scrapes.
    admin_services = []
    for doc in docs:
        if doc["kind"] != "Service" or not selects(doc["spec"].get("selector") or {}, pod_labels):
            continue
        spec, name = doc["spec"], doc["metadata"]["name"]
        targets = [resolve(p.get("targetPort", p["port"])) for p in spec.get("ports", [])]
        if admin_port in targets:
            if spec.get("type", "ClusterIP") != "ClusterIP" or set(targets) != {admin_port} or name == "edge":
                problem(f"k8s {overlay}: Service {name} exposes the edge's admin port {admin_port}: only a ClusterIP "
                        f"Service of its own may (has type {spec.get('type')!r}, target ports {targets})")
            else:
                admin_services.append(doc)
    public = kinds.get(("Service", "edge"))
    if not public or resolve(public["spec"]["ports"][0].get("targetPort")) != public_port:
        problem(f"k8s {overlay}: the Service edge must serve the edge's public port {public_port}")
    monitor = next((d for _, d in documents([ROOT / SERVICE_MONITOR]) if d.get("kind") == "ServiceMonitor"), None)
    if monitor:
        spec = monitor["spec"]
        scraped = [s for s in admin_services
                   if selects(spec.get("selector") or {}, s["metadata"].get("labels", {}))
                   and s["metadata"].get("labels", {}).get(spec.get("jobLabel")) == "edge"
                   and any(e.get("port") in [p.get("name") for p in s["spec"]["ports"]]
                           and e.get("path", "/metrics") == "/metrics" for e in spec.get("endpoints", []))]
        if not scraped:
            problem(f"{SERVICE_MONITOR}: no endpoint scrapes the edge's admin port through a Service labelled "
                    f"{spec.get('jobLabel')}: edge (admin Services: {[s['metadata']['name'] for s in admin_services]})")

    # NetworkPolicies: every rule that opens the admin port to the edge's pods admits
    # Prometheus only; and one does.
    opened = []
    for policy in (d for d in docs if d["kind"] == "NetworkPolicy"):
        selector = policy["spec"]["podSelector"]
        if selector.get("matchLabels") and not selects(selector, pod_labels):
            continue
        for rule in policy["spec"].get("ingress", []) or []:
            ports = rule.get("ports")
            if ports is None or any(p.get("port") in (admin_port, "admin") for p in ports):
                opened.append((policy["metadata"]["name"], rule.get("from")))
    for name, peers in opened:
        if not peers or any(peer != PROMETHEUS_PEER for peer in peers):
            problem(f"k8s {overlay}: NetworkPolicy {name} opens the edge's admin port {admin_port} to {peers or 'anyone'}: "
                    f"Prometheus only ({PROMETHEUS_PEER})")
    if not opened:
        problem(f"k8s {overlay}: no NetworkPolicy lets Prometheus reach the edge's admin port {admin_port}")

    # TLS: both files of one Secret volume mounted read-only as a directory, so a
    # renewed Secret reaches the edge (a subPath mount never updates).
    tls = [env.get(var) for var in TLS_VARS]
    if not any(tls):
        return
    if not all(tls):
        problem(f"{where}: sets only some of {TLS_VARS}: TLS needs both")
        return
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts_of = [next((m for m in container.get("volumeMounts", [])
                       if path.startswith(m["mountPath"].rstrip("/") + "/")), None) for path in tls]
    mount = mounts_of[0]
    secret = (volumes.get(mount["name"], {}).get("secret") or {}) if mount else {}
    if not mount or mounts_of[1] is not mount or not secret.get("secretName"):
        problem(f"{where}: {' and '.join(TLS_VARS)} ({tls}) must be files of one Secret volume")
        return
    if mount.get("subPath") or mount.get("subPathExpr") or not mount.get("readOnly"):
        problem(f"{where}: the TLS Secret must be mounted read-only as a directory, without subPath (a subPath "
                f"mount never sees a renewed certificate): {mount}")
    files = {item["path"]: item["key"] for item in secret.get("items", [])}
    for path, key in zip(tls, TLS_SECRET_KEYS):
        name = path[len(mount["mountPath"].rstrip("/")) + 1:]
        if files.get(name, name if not files else None) != key:
            problem(f"{where}: {path} is not the key {key} of the kubernetes.io/tls Secret {secret['secretName']}")
    examples = [d for _, d in documents([ROOT / EXAMPLE_CERTIFICATE]) if d.get("kind") == "Certificate"] \
        if (ROOT / EXAMPLE_CERTIFICATE).exists() else []
    if len(examples) != 1:
        problem(f"{EXAMPLE_CERTIFICATE}: expected one cert-manager Certificate, found {len(examples)}")
        return
    certificate = examples[0]
    spec = certificate.get("spec") or {}
    if certificate.get("apiVersion") != "cert-manager.io/v1" or spec.get("secretName") != secret["secretName"] \
            or certificate["metadata"].get("namespace") != namespace:
        problem(f"{EXAMPLE_CERTIFICATE}: must be a cert-manager.io/v1 Certificate writing the Secret "
                f"{secret['secretName']} in {namespace}, which the edge mounts (has {certificate.get('apiVersion')}, "
                f"{spec.get('secretName')!r} in {certificate['metadata'].get('namespace')!r})")
    key = spec.get("privateKey") or {}
    if not spec.get("dnsNames") or not (spec.get("issuerRef") or {}).get("name") or key.get("rotationPolicy") != "Always":
        problem(f"{EXAMPLE_CERTIFICATE}: needs dnsNames, an issuerRef and privateKey.rotationPolicy: Always")


def check_pin_script():
    digests = {app: "sha256:" + format(i + 10, "x") * 64 for i, app in enumerate(APPS)}
    prefix = "ghcr.io/example/todo"
    with tempfile.TemporaryDirectory() as tmp:
        k8s = Path(tmp) / "k8s"
        subprocess.run(["cp", "-r", str(ROOT / "deploy/k8s"), str(k8s)], check=True)
        kustomization = k8s / "overlays/prod/kustomization.yaml"
        before = kustomization.read_text()
        subprocess.run(["bash", str(ROOT / "ci/pin-prod-digests.sh"), "--prefix", prefix,
                        *(f"{app}={digest}" for app, digest in digests.items())],
                       check=True, env={"PROD_KUSTOMIZATION": str(kustomization), "PATH": "/usr/bin:/bin"},
                       stdout=subprocess.DEVNULL)
        after = kustomization.read_text()
        comments = [line for line in before.splitlines() if line.lstrip().startswith("#")]
        if comments != [line for line in after.splitlines() if line.lstrip().startswith("#")]:
            problem("pin-prod-digests.sh changed the comments of the kustomization")
        rendered = subprocess.run(["kubectl", "kustomize", str(k8s / "overlays/prod")],
                                  check=True, capture_output=True, text=True).stdout
        images = {c["name"]: c["image"]
                  for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment"
                  for c in d["spec"]["template"]["spec"]["containers"]}
        for app, digest in digests.items():
            if images.get(app) != f"{prefix}/{app}@{digest}":
                problem(f"pin-prod-digests.sh: rendered prod {app} image is {images.get(app)!r}, "
                        f"expected {prefix}/{app}@{digest}")
        bad = subprocess.run(["bash", str(ROOT / "ci/pin-prod-digests.sh"), "edge=sha256:1234"],
                             env={"PROD_KUSTOMIZATION": str(kustomization), "PATH": "/usr/bin:/bin"},
                             capture_output=True)
        if bad.returncode == 0:
            problem("pin-prod-digests.sh accepted a malformed digest")


def check_renovate(schema_path):
    config = json.loads((ROOT / "renovate.json").read_text())
    schema = json.loads(schema_path.read_text() if hasattr(schema_path, "read_text") else Path(schema_path).read_text())
    definitions = schema["definitions"]

    def known(obj, allowed, where):
        for key in obj:
            if key not in allowed:
                problem(f"renovate.json: unknown key {key!r} in {where}")

    known(config, {"$schema", *schema["properties"]}, "the top level")
    rule_keys = definitions["packageRules"]["items"]["allOf"][0]["properties"]
    for i, rule in enumerate(config.get("packageRules", [])):
        known(rule, rule_keys, f"packageRules[{i}]")
    manager_keys = definitions["customManagers"]["items"]["allOf"][0]["properties"]
    annotated = {}
    for path in sorted(ROOT.glob("ci/*.sh")) + [ROOT / "deploy/Dockerfile"]:
        for match in re.finditer(r"# renovate: datasource=\S+ depName=(\S+)", path.read_text()):
            annotated[(path.relative_to(ROOT).as_posix(), match.group(1))] = False
    for i, manager in enumerate(config.get("customManagers", [])):
        known(manager, manager_keys, f"customManagers[{i}]")
        files = [re.compile(p.strip("/")) for p in manager.get("managerFilePatterns", [])]
        for pattern in manager.get("matchStrings", []):
            regex = re.compile(pattern.replace("(?<", "(?P<"))
            for path, dep in annotated:
                if any(f.search(path) for f in files):
                    for match in regex.finditer((ROOT / path).read_text()):
                        if match.group("depName") == dep and match.group("currentValue"):
                            annotated[(path, dep)] = True
    for (path, dep), found in annotated.items():
        if not found:
            problem(f"renovate.json: no custom manager reads the version of {dep} in {path}")
    enabled = set(config.get("enabledManagers", []))
    for manager in ("dockerfile", "docker-compose", "kubernetes", "cargo", "github-actions", "pip_requirements"):
        if manager not in enabled:
            problem(f"renovate.json: manager {manager} is not enabled")


def check_dashboard(promtool):
    dashboard = json.loads((ROOT / "deploy/observability/grafana-dashboard.json").read_text())
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    if len(ids) != len(set(ids)):
        problem("dashboard: duplicate panel ids")
    cells = {}
    for panel in panels:
        g = panel["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    problem(f"dashboard: panels {cells[(x, y)]!r} and {panel['title']!r} overlap")
                    break
                cells[(x, y)] = panel["title"]
            else:
                continue
            break
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    for metric in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"):
        if not any(metric in e for e in exprs):
            problem(f"dashboard: no panel shows {metric}")
    if promtool:
        rules = {"groups": [{"name": "dashboard", "rules": [
            {"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)]}]}
        with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
            yaml.safe_dump(rules, f)
            f.flush()
            result = subprocess.run([promtool, "check", "rules", f.name], capture_output=True, text=True)
            if result.returncode != 0:
                problem(f"dashboard: a query does not parse:\n{result.stdout}{result.stderr}")


def check_ci():
    run = (ROOT / ".ci/run").read_text()
    workflow = (ROOT / ".github/workflows/ci.yml").read_text()
    if not re.search(r"^cargo deny --locked --offline check bans licenses sources$", run, re.MULTILINE):
        problem(".ci/run: no `cargo deny --locked --offline check bans licenses sources`")
    if run.find("cargo deny") < run.find("cargo clippy"):
        problem(".ci/run: cargo deny must run after the lint")
    if not re.search(r"^bash ci/newcomer.sh$", run, re.MULTILINE) or \
            run.find("bash ci/newcomer.sh") < run.find("bash ci/test.sh"):
        problem(".ci/run: the newcomer check (bash ci/newcomer.sh) must run after the tests")
    if "cargo deny --locked check advisories" not in workflow:
        problem("workflow: no `cargo deny --locked check advisories` step")
    if "bash ci/pin-prod-digests.sh" not in workflow:
        problem("workflow: the prod overlay is not pinned with ci/pin-prod-digests.sh")
    tools = (ROOT / "ci/install-test-tools.sh").read_text()
    if not re.search(r'^CARGO_DENY_VERSION="\$\{CARGO_DENY_VERSION:-\d+\.\d+\.\d+\}"$', tools, re.MULTILINE) or \
            'cargo install --locked --quiet cargo-deny --version "$CARGO_DENY_VERSION"' not in tools:
        problem("ci/install-test-tools.sh: cargo-deny must be installed --locked at a pinned version")
    scripts = [ROOT / ".ci/run", *ROOT.glob("ci/*.sh"), *ROOT.glob("scripts/*.sh"), *ROOT.glob("bench/*.sh"),
               *ROOT.glob("deploy/**/*.sh")]
    for path in scripts:
        if path.name in ("lib.sh", "script-tests.sh"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"(^|[;&|({]\s*|\bthen\s+|\bdo\s+|\s)(DEBIAN_FRONTEND=\S+\s+)?apt-get\s+(update|install)", code) \
                    and "echo" not in code:
                problem(f"{path.relative_to(ROOT)}:{number}: apt-get without ci/lib.sh's apt_install "
                        "(root assumed): use apt_install")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    command, args = sys.argv[1], sys.argv[2:]
    if command == "compose":
        check_compose()
    elif command == "dockerfile":
        check_dockerfile()
    elif command == "k8s":
        check_k8s(args)
    elif command == "pin-script":
        check_pin_script()
    elif command == "renovate":
        if args:
            check_renovate(args[0])
        else:  # the schema check-jsonschema vendors (--builtin-schema vendor.renovate)
            from importlib.resources import files
            check_renovate(files("check_jsonschema.builtin_schemas.vendor") / "renovate.json")
    elif command == "dashboard":
        check_dashboard(args[0] if args else None)
    elif command == "ci":
        check_ci()
    elif command == "broker":
        check_broker(args)
    elif command == "tracing":
        check_tracing(args)
    else:
        sys.exit(f"unknown check {command!r}\n{__doc__}")
    for message in problems:
        print(f"    {message}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
