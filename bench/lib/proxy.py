"""The proxy comparison: nginx as a plain reverse proxy against the edge, same pinned
core, same trivial upstream, same wrk load, interleaved rounds.

Core 0 runs the proxy under test (every proxy is started pinned there; the idle ones
cost nothing). Core 1 runs wrk and the trivial upstream (and, for the EdDSA edges, the
static HTTP server of their JWK Set, fetched once a minute).

Token checks: the HS256 edges get JWT_SECRET; the EdDSA edges get JWT_JWKS_URL, a JWK
Set file that `python3 -m http.server` serves, holding the public half of an Ed25519 key
this harness made (bench/lib/ed25519.py) and signs its tokens with. Each pair runs once
with one token (after its first request the edge's verified-token cache answers) and once
with TOKEN_POOL distinct tokens taken in turn (the cache never answers: every request
pays the full signature check)."""

import json
import os
import subprocess
import sys
import time

from ed25519 import SigningKey
from harness import (
    BENCH_DIR,
    BenchError,
    children,
    cpu_split,
    free_port,
    free_ports,
    log,
    median,
    metric,
    mint_eddsa_token,
    mint_token,
    object_id,
    port_open,
    request,
    run_wrk,
    status_kib,
    wait_http_ok,
)

PROXY_CPU = "0"
LOAD_CPU = "1"
WRK_PATH = "/tasks"
ORIGIN = "http://localhost:3000"
# The shared-limit edge's Redis (ci/backends.sh starts one there).
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")

# About 300 bytes, shaped like a small task list page.
UPSTREAM_BODY = json.dumps(
    {
        "items": [
            {
                "id": "65f0c0ffee65f0c0ffee65f0",
                "title": "Buy milk",
                "description": "two litres, semi-skimmed",
                "status": "open",
                "priority": "normal",
                "dueDate": None,
                "createdAt": "2024-03-12T10:00:00.000Z",
                "updatedAt": "2024-03-12T10:00:00.000Z",
                "completedAt": None,
            }
        ],
        "nextCursor": "NjVmMGMwZmZlZTY1ZjBjMGZmZWU2NWYw",
        "note": "benchmark body",
    },
    separators=(",", ":"),
)


def edge_config(name, description, variant="full", rust_log="info", tokens="hs256"):
    """(name, policy variant, RUST_LOG, tokens, what it shows) of an edge that runs besides
    nginx; the defaults are the shipped edge's. tokens: "hs256" or "eddsa", one token for
    every request; "hs256-pool" or "eddsa-pool", TOKEN_POOL distinct tokens in turn."""
    return name, variant, rust_log, tokens, description


EDGE_CONFIGS = [
    edge_config("edge", "the shipped policy: token check (HS256, one token: the verified-token cache answers), rate "
                "limit, CORS, security headers, metrics, access log"),
    edge_config("edge-shared", "as edge, with every limit table on store = \"redis\": one budget across replicas, "
                "leased in batches from Redis (EDGE_REDIS_URL)", variant="shared"),
    edge_config("edge-bare", "no token check, no rate limit, no CORS; headers, metrics and access log remain",
                variant="bare"),
    edge_config("edge-bare-nolog", "as edge-bare, with the access log filtered out (RUST_LOG=warn)", variant="bare",
                rust_log="warn"),
    edge_config("edge-eddsa", "as edge, with EdDSA (Ed25519) tokens checked against a JWK Set (JWT_JWKS_URL, a "
                "static HTTP server); one token: the verified-token cache answers", tokens="eddsa"),
    edge_config("edge-nocache", "as edge, with a distinct HS256 token per request: the cache never answers, every "
                "request is a full HMAC check", tokens="hs256-pool"),
    edge_config("edge-eddsa-nocache", "as edge-eddsa, with a distinct EdDSA token per request: the cache never "
                "answers, every request is a full Ed25519 check", tokens="eddsa-pool"),
    edge_config("edge-baseline", "as edge, run from the binary BENCH_BASELINE_EDGE names (another build, e.g. the "
                "previous commit's): a before/after comparison in one run"),
    edge_config("edge-traced", "as edge, every request traced (OTEL_TRACES_SAMPLER=traceidratio, ratio 1.0) and its "
                "span exported over OTLP/HTTP to a local collector stand-in"),
    edge_config("edge-traced-1pct", "as edge-traced at sampler ratio 0.01: one request in a hundred is exported"),
]
# The sampler of the traced edges; `edge` itself runs with tracing off (no endpoint).
TRACED = {"edge-traced": "1.0", "edge-traced-1pct": "0.01"}
# Distinct tokens for the *-nocache edges, used in turn (wrk/bearer-pool.lua). The edge's
# cache holds at most 8 shards x 512 tokens and empties a full shard: between two uses of
# one token, ~1024 other new tokens land in its shard, so it was always dropped meanwhile.
# All carry the same `sub` (one rate-limit key, as with the single token) and differ by
# `exp` (a second apart).
TOKEN_POOL = 8192
NGINX_DESCRIPTION = "nginx 1 worker, plain reverse proxy, upstream keep-alive, no access log"
# The reference of what the framework gives a first attempt (issue 17): bench/naive-pingora.
NAIVE = "naive"
NAIVE_DESCRIPTION = ("a naive Pingora build (bench/naive-pingora): the HS256 token checked with jsonwebtoken on "
                     "every request, a pingora-limits rate per subject, CORS and security headers; no access log, "
                     "metrics or request ids")
# The same build with every filter off (PLAIN=1): the floor under any gateway on Pingora.
PINGORA_PLAIN = "pingora-plain"
PINGORA_PLAIN_DESCRIPTION = ("bench/naive-pingora with PLAIN=1: a plain Pingora proxy configured as the edge (no "
                             "compression module, no work stealing), no token, limit, CORS or headers; what the "
                             "framework costs before any feature")


def nginx_conf(run_dir, name, body):
    prefix = run_dir / name
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""# Generated by bench/.
daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
{body}
}}
"""
    )
    return conf


def upstream_body_conf(port):
    escaped = UPSTREAM_BODY.replace("\\", "\\\\").replace("'", "\\'")
    return f"""    server {{
        listen 127.0.0.1:{port} reuseport;
        default_type application/json;
        location / {{ return 200 '{escaped}'; }}
    }}"""


def proxy_body_conf(port, upstream_port):
    return f"""    upstream trivial {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
        keepalive_requests 10000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://trivial;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""


def cpu_times():
    """Per-CPU (busy, total) jiffies from /proc/stat."""
    times = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                parts = line.split()
                values = [int(v) for v in parts[1:]]
                idle = values[3] + values[4]
                times[parts[0][3:]] = (sum(values) - idle, sum(values))
    return times


def busy_share(before, after, cpu):
    busy = after[cpu][0] - before[cpu][0]
    total = after[cpu][1] - before[cpu][1]
    return busy / total if total else float("nan")


def measured(target, load):
    """Runs `load` (returning its tool's result: requests, rps, ...) and adds what the
    proxy spent meanwhile: CPU per request, its share of a core, each core's busy share."""
    split_before = [cpu_split(pid) for pid in target.pids]
    cores_before = cpu_times()
    started = time.monotonic()
    result = load()
    wall = time.monotonic() - started
    cores_after = cpu_times()
    split_after = [cpu_split(pid) for pid in target.pids]
    user = sum(after[0] - before[0] for before, after in zip(split_before, split_after))
    system = sum(after[1] - before[1] for before, after in zip(split_before, split_after))
    cpu_used = user + system
    requests = max(1, result["requests"])
    result["proxy_cpu_s"] = cpu_used
    result["cpu_us_per_request"] = cpu_used / requests * 1e6
    result["user_us_per_request"] = user / requests * 1e6
    result["system_us_per_request"] = system / requests * 1e6
    result["proxy_core_share"] = cpu_used / wall
    result["core0_busy"] = busy_share(cores_before, cores_after, PROXY_CPU)
    result["core1_busy"] = busy_share(cores_before, cores_after, LOAD_CPU)
    return result


def summary_row(target, rows, medians):
    """A target's figures over its rounds: the medians of `medians`, peak memory, totals."""
    return {
        "name": target.name,
        "description": target.description,
        "port": target.port,
        "pid": target.main_pid,
        **{key: median([r[key] for r in rows]) for key in medians},
        "peak_mib": status_kib(target.main_pid, "VmHWM") / 1024,
        "requests": sum(r["requests"] for r in rows),
        "errors": sum(r["non_2xx"] + r["socket_errors"] for r in rows),
        "rounds": rows,
    }


class Target:
    def __init__(self, name, description, port, pids, main_pid, script):
        self.name = name
        self.description = description
        self.port = port
        self.pids = pids  # processes whose CPU counts
        self.main_pid = main_pid  # the process whose peak memory counts
        self.script = script  # the wrk script: which token(s) the requests carry
        self.rounds = []


def wrk_script(run_dir, token, name="bearer"):
    script = run_dir / f"{name}.lua"
    script.write_text((BENCH_DIR / "wrk" / "bearer.lua").read_text().replace("@TOKEN@", token).replace("@ORIGIN@", ORIGIN))
    return script


def wrk_pool_script(run_dir, tokens, name):
    """A wrk script sending `tokens` in turn, one per request (read from a file at start)."""
    token_file = run_dir / f"{name}.tokens"
    token_file.write_text("\n".join(tokens) + "\n")
    script = run_dir / f"{name}.lua"
    script.write_text((BENCH_DIR / "wrk" / "bearer-pool.lua").read_text().replace("@TOKENS@", str(token_file))
                      .replace("@ORIGIN@", ORIGIN))
    return script


class TokenKinds:
    """The tokens and edge settings of each token mode, made once per run."""

    def __init__(self, processes, run_dir, secret, names):
        self.secret = secret
        self.subject = object_id()
        self.key = None
        self.jwks_url = None
        self.scripts = {}
        self.first = {}
        kinds = {kind for name, _, _, kind, _ in EDGE_CONFIGS if name in names} | {"hs256"}
        if any(kind.startswith("eddsa") for kind in kinds):
            self.key = SigningKey()
            self.jwks_url = serve_jwks(processes, run_dir, self.key)
        for kind in sorted(kinds):
            mint = self.mint_eddsa if kind.startswith("eddsa") else self.mint_hs256
            if kind.endswith("-pool"):
                started = time.monotonic()
                tokens = [mint(7200 + i) for i in range(TOKEN_POOL)]
                log(f"minted {TOKEN_POOL} distinct {kind.split('-')[0].upper()} tokens in "
                    f"{time.monotonic() - started:.1f} s")
                self.scripts[kind] = wrk_pool_script(run_dir, tokens, f"bearer-{kind}")
            else:
                tokens = [mint(7200)]
                # bearer.lua: nginx, the HS256 edges and the profile run send this one.
                self.scripts[kind] = wrk_script(run_dir, tokens[0], "bearer" if kind == "hs256" else f"bearer-{kind}")
            self.first[kind] = tokens[0]

    def mint_hs256(self, ttl_seconds):
        return mint_token(self.secret, self.subject, ttl_seconds)

    def mint_eddsa(self, ttl_seconds):
        return mint_eddsa_token(self.key, self.subject, ttl_seconds)

    def edge_env(self, kind):
        if kind.startswith("eddsa"):
            return {"JWT_JWKS_URL": self.jwks_url, "JWT_JWKS_REFRESH_SECONDS": "60"}
        return {"JWT_SECRET": self.secret}


def serve_jwks(processes, run_dir, key):
    """Serves the JWK Set of `key` (kid `primary`, as svc-users publishes it) from a static
    HTTP server on core 1; returns its URL."""
    root = run_dir / "jwks"
    (root / ".well-known").mkdir(parents=True, exist_ok=True)
    (root / ".well-known" / "jwks.json").write_text(json.dumps({"keys": [key.jwk("primary")]}))
    port = free_port()
    processes.start("jwks-server", [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                                    "--directory", str(root)], cpus=LOAD_CPU)
    wait_http_ok(port, "/.well-known/jwks.json", 10, processes)
    url = f"http://127.0.0.1:{port}/.well-known/jwks.json"
    log(f"JWK Set (Ed25519, kid primary) served by python3 -m http.server at {url}, core {LOAD_CPU}")
    return url


def start_edge(processes, run_dir, binaries, name, variant, rust_log, upstream_port, token_env, extra_env=None):
    """Starts an edge pinned to the proxy core; returns its port, its admin port (/readyz,
    /metrics) and its process."""
    policy_dir = run_dir / f"policy-{name}"
    subprocess.run(
        ["python3", str(BENCH_DIR / "lib" / "policies.py"), variant, str(BENCH_DIR.parent / "policies"), str(policy_dir),
         f"127.0.0.1:{upstream_port}"],
        check=True,
        timeout=30,
    )
    port, admin_port = free_ports(2)
    env = {
        "LISTEN_ADDR": f"127.0.0.1:{port}",
        "EDGE_ADMIN_ADDR": f"127.0.0.1:{admin_port}",
        "POLICY_DIR": str(policy_dir),
        **token_env,
        **({"EDGE_REDIS_URL": REDIS_URL} if variant == "shared" else {}),
        "EDGE_THREADS": "1",
        "SHUTDOWN_GRACE_SECONDS": "1",
        "RUST_LOG": rust_log,
        # Allocator tuning experiments: MIMALLOC_PURGE_DELAY=0 bash bench/run.sh ...
        **{key: value for key, value in os.environ.items() if key.startswith("MIMALLOC_")},
        **(extra_env or {}),
    }
    binary = os.environ["BENCH_BASELINE_EDGE"] if name == "edge-baseline" else str(binaries / "edge")
    proc = processes.start(name, [binary], env=env, cpus=PROXY_CPU)
    return port, admin_port, proc


def naive_env(port, upstream_port, secret, plain=False):
    """What bench/naive-pingora reads: its address, its one upstream, the HS256 key, the
    origin; `plain`: every filter off."""
    return {"LISTEN_ADDR": f"127.0.0.1:{port}", "UPSTREAM": f"127.0.0.1:{upstream_port}", "JWT_SECRET": secret,
            "ALLOWED_ORIGIN": ORIGIN, "PLAIN": "1" if plain else "0"}


def start_naive(processes, binaries, upstream_port, secret, token, plain=False):
    """Starts the naive Pingora build (or, `plain`, the plain proxy) pinned to the proxy
    core, checks it does the work it is credited with; returns its port and process."""
    port = free_port()
    proc = processes.start(PINGORA_PLAIN if plain else NAIVE, [str(binaries / "naive-pingora")],
                           env=naive_env(port, upstream_port, secret, plain), cpus=PROXY_CPU)
    wait_http_ok(port, WRK_PATH, 20, processes, headers={"authorization": f"Bearer {token}", "origin": ORIGIN})
    if not plain:
        check_edge_behaviour(port, token, wanted=["access-control-allow-origin", "content-security-policy"])
    return port, proc


def wait_edge_ready(processes, name, port, admin_port):
    """Until /readyz answers 200: on the admin listener, or (a baseline build from before
    EDGE_ADMIN_ADDR existed) on the public one."""
    try:
        wait_http_ok(admin_port, "/readyz", 5 if name == "edge-baseline" else 20, processes)
    except BenchError:
        if name != "edge-baseline":
            raise
        wait_http_ok(port, "/readyz", 5, processes)


FULL_EDGE_HEADERS = ["access-control-allow-origin", "ratelimit-limit", "content-security-policy", "x-request-id"]


def check_edge_behaviour(port, token, wanted=None):
    """The proxy under test really does the work it is credited with: with `wanted` (the
    headers its answers must carry), it refuses a request without a token too."""
    status, _ = request(port, "GET", WRK_PATH, headers={"authorization": f"Bearer {token}", "origin": ORIGIN})
    if status != 200:
        raise BenchError(f"edge on {port}: GET {WRK_PATH} with a token answered {status}")
    if wanted:
        status, _ = request(port, "GET", WRK_PATH)
        if status != 401:
            raise BenchError(f"edge on {port}: GET {WRK_PATH} without a token answered {status}, not 401")
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", WRK_PATH, headers={"authorization": f"Bearer {token}", "origin": ORIGIN})
        response = conn.getresponse()
        response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
        conn.close()
        missing = [h for h in wanted if h not in headers]
        if missing:
            raise BenchError(f"edge on {port}: response lacks {missing}")


def run(processes, run_dir, binaries, secret, rounds, seconds, warmup_seconds, connections, edge_names):
    upstream_port = free_port()
    conf = nginx_conf(run_dir, "upstream-nginx", upstream_body_conf(upstream_port))
    processes.start("upstream-nginx", ["nginx", "-c", str(conf), "-p", str(conf.parent)], cpus=LOAD_CPU)
    wait_http_ok(upstream_port, "/healthz", 10, processes)
    log(f"trivial upstream (nginx) on 127.0.0.1:{upstream_port}, core {LOAD_CPU}, body {len(UPSTREAM_BODY)} bytes")

    nginx_port = free_port()
    conf = nginx_conf(run_dir, "proxy-nginx", proxy_body_conf(nginx_port, upstream_port))
    nginx_master = processes.start("proxy-nginx", ["nginx", "-c", str(conf), "-p", str(conf.parent)], cpus=PROXY_CPU)
    wait_http_ok(nginx_port, WRK_PATH, 10, processes)
    workers = children(nginx_master.pid)
    if len(workers) != 1:
        raise BenchError(f"proxy nginx has {len(workers)} workers, expected 1")
    tokens = TokenKinds(processes, run_dir, secret, edge_names)
    targets = [Target("nginx", NGINX_DESCRIPTION, nginx_port, [nginx_master.pid] + workers, workers[0],
                      tokens.scripts["hs256"])]
    log(f"nginx proxy on 127.0.0.1:{nginx_port}, core {PROXY_CPU}")

    collector = None
    admin_ports = {}
    for name, variant, rust_log, kind, description in EDGE_CONFIGS:
        if name not in edge_names:
            continue
        extra_env = None
        if name in TRACED:
            collector = collector or start_collector(processes, run_dir)
            extra_env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector, "OTEL_TRACES_SAMPLER": "traceidratio",
                         "OTEL_TRACES_SAMPLER_ARG": TRACED[name]}
        port, admin_port, proc = start_edge(processes, run_dir, binaries, name, variant, rust_log, upstream_port,
                                            tokens.edge_env(kind), extra_env)
        admin_ports[name] = admin_port
        # An EdDSA edge is ready only once it loaded the JWK Set.
        wait_edge_ready(processes, name, port, admin_port)
        check_edge_behaviour(port, tokens.first[kind], FULL_EDGE_HEADERS if variant in ("full", "shared") else None)
        targets.append(Target(name, description, port, [proc.pid], proc.pid, tokens.scripts[kind]))
        log(f"{name} on 127.0.0.1:{port}, core {PROXY_CPU}: {description}")

    for name, description, plain in ((NAIVE, NAIVE_DESCRIPTION, False),
                                     (PINGORA_PLAIN, PINGORA_PLAIN_DESCRIPTION, True)):
        if name in edge_names:
            port, proc = start_naive(processes, binaries, upstream_port, secret, tokens.first["hs256"], plain)
            targets.append(Target(name, description, port, [proc.pid], proc.pid, tokens.scripts["hs256"]))
            log(f"{name} on 127.0.0.1:{port}, core {PROXY_CPU}: {description}")

    for target in targets:
        log(f"warm-up {target.name} ({warmup_seconds} s)")
        run_wrk(f"http://127.0.0.1:{target.port}{WRK_PATH}", 1, connections, warmup_seconds, target.script,
                cpus=LOAD_CPU)

    for round_no in range(1, rounds + 1):
        for target in targets:
            processes.check_alive()
            result = measured(target, lambda: run_wrk(f"http://127.0.0.1:{target.port}{WRK_PATH}", 1, connections,
                                                      seconds, target.script, cpus=LOAD_CPU))
            result.pop("raw")
            target.rounds.append(result)
            log(
                f"round {round_no} {target.name:18} {result['rps']:9.0f} req/s  p50 {result['p50_ms']:.2f} ms  "
                f"p99 {result['p99_ms']:.2f} ms  {result['cpu_us_per_request']:.1f} us/req (user "
                f"{result['user_us_per_request']:.1f}, kernel {result['system_us_per_request']:.1f})  "
                f"errors {result['non_2xx'] + result['socket_errors']}"
            )
            truncate_logs(run_dir, target.name)

    medians = ("rps", "p50_ms", "p99_ms", "cpu_us_per_request", "user_us_per_request", "system_us_per_request",
               "proxy_core_share", "core1_busy")
    summary = [summary_row(target, target.rounds, medians) for target in targets]
    for row in summary:
        if row["name"] in TRACED:
            # A span the collector stand-in could not take in time is dropped, not waited for.
            row["spans_dropped"] = metric(admin_ports[row["name"]], "otel_spans_dropped_total")
            log(f"{row['name']}: {row['spans_dropped']:.0f} spans dropped over {row['requests']} requests")
    if collector:
        stats = json.loads((run_dir / "otlp-sink.json").read_text() or "{}")
        log(f"collector stand-in received {stats.get('exports', 0)} exports, {stats.get('bytes', 0) / 1e6:.1f} MB")
    return {"connections": connections, "seconds": seconds, "rounds": rounds, "body_bytes": len(UPSTREAM_BODY),
            "path": WRK_PATH, "token_pool": TOKEN_POOL, "targets": summary}


def start_collector(processes, run_dir):
    """The traced edges' OTLP endpoint: bench/lib/otlp_sink.py on the load core."""
    port = free_port()
    (run_dir / "otlp-sink.json").write_text("{}")
    processes.start("otlp-sink", [sys.executable, str(BENCH_DIR / "lib" / "otlp_sink.py"), str(port),
                                  str(run_dir / "otlp-sink.json")], cpus=LOAD_CPU)
    for _ in range(100):
        if port_open(port):
            break
        time.sleep(0.05)
    else:
        raise BenchError("the OTLP collector stand-in did not start")
    log(f"OTLP collector stand-in (bench/lib/otlp_sink.py) on 127.0.0.1:{port}, core {LOAD_CPU}")
    return f"http://127.0.0.1:{port}"



def truncate_logs(run_dir, name):
    """The access log of a 10 s round is tens of MB; only the last round's tail matters."""
    out = run_dir / f"{name}.out"
    if out.exists() and out.stat().st_size > 1 << 20:
        # The edge writes with O_APPEND, so truncating in place is safe.
        with open(out, "r+b") as f:
            f.truncate(0)


def port_is_free(port):
    return not port_open(port)
