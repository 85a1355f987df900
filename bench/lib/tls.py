"""The TLS comparison: nginx terminating TLS against the edge terminating TLS, with the
same certificate (ECDSA P-256, made by openssl for this run), on the same pinned core, in
front of the same trivial upstream, interleaved rounds. Three loads per round:

- keep-alive: wrk, HTTP/1.1 over TLS, every connection kept open (requests per second
  and CPU per request);
- handshakes: wrk sending `Connection: close`, so every request opens a new TCP
  connection and makes a full TLS handshake (wrk resumes no session): handshakes per
  second;
- h2: h2load, HTTP/2 over TLS (ALPN h2), 10 streams in flight per connection.

Every request carries the full edge's token and Origin (bench/wrk/bearer.lua), as in the
plain proxy comparison."""

import re
import subprocess
import time

from harness import BenchError, children, free_port, log, run_wrk, wait_http_ok
from proxy import (
    LOAD_CPU,
    ORIGIN,
    PROXY_CPU,
    WRK_PATH,
    Target,
    TokenKinds,
    measured,
    nginx_conf,
    summary_row,
    start_edge,
    truncate_logs,
    upstream_body_conf,
)

LOADS = [
    ("keep-alive", "HTTP/1.1 over TLS, kept-alive connections (wrk)"),
    ("handshakes", "a new connection and full TLS handshake per request (wrk, Connection: close)"),
    ("h2", "HTTP/2 over TLS, 10 streams in flight per connection (h2load)"),
]
H2_STREAMS = 10


def make_certificate(run_dir):
    """An ECDSA P-256 certificate for 127.0.0.1 and localhost, for both proxies."""
    directory = run_dir / "tls"
    directory.mkdir(exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )
    return cert, key


def nginx_tls_body_conf(port, upstream_port, cert, key):
    return f"""    upstream trivial {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
        keepalive_requests 10000000;
    }}
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{
            proxy_pass http://trivial;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""


def closing_script(run_dir, script):
    """`script` plus `Connection: close`: the proxy ends the connection after each answer."""
    closing = run_dir / f"{script.stem}-close.lua"
    closing.write_text(script.read_text() + 'wrk.headers["Connection"] = "close"\n')
    return closing


def run_h2load(url, connections, seconds, token):
    argv = ["taskset", "-c", LOAD_CPU, "h2load", "-t1", f"-c{connections}", f"-m{H2_STREAMS}", f"-D{seconds}", "-N5",
            "-H", f"authorization: Bearer {token}", "-H", f"origin: {ORIGIN}", url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    if done.returncode != 0:
        raise BenchError(f"h2load failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    text = done.stdout
    match = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", text)
    requests = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                         r"(\d+) errored, (\d+) timeout", text)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if not (match and requests and codes):
        raise BenchError(f"cannot read h2load output:\n{text}")
    done_count = int(requests.group(2))
    latency = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", text)
    result = {
        "requests": done_count,
        "duration_s": float(match.group(1)),
        "rps": float(match.group(2)),
        "non_2xx": done_count - int(codes.group(1)),
        "socket_errors": int(requests.group(4)) + int(requests.group(6)),  # failed (errored among them), timed out
    }
    if latency:
        result["mean_ms"] = h2load_ms(latency.group(3))
    return result


def h2load_ms(value):
    match = re.match(r"^([\d.]+)(us|ms|s)$", value)
    return float(match.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[match.group(2)] if match else float("nan")


def measure(target, load, connections, seconds, token, scripts):
    url = f"https://127.0.0.1:{target.port}{WRK_PATH}"
    if load == "h2":
        return run_h2load(url, connections, seconds, token)
    result = run_wrk(url, 1, connections, seconds, scripts[load], cpus=LOAD_CPU)
    result.pop("raw")
    return result


def run(processes, run_dir, binaries, secret, rounds, seconds, warmup_seconds, connections):
    cert, key = make_certificate(run_dir)
    upstream_port = free_port()
    conf = nginx_conf(run_dir, "tls-upstream-nginx", upstream_body_conf(upstream_port))
    processes.start("tls-upstream-nginx", ["nginx", "-c", str(conf), "-p", str(conf.parent)], cpus=LOAD_CPU)
    wait_http_ok(upstream_port, "/healthz", 10, processes)

    nginx_port = free_port()
    conf = nginx_conf(run_dir, "tls-proxy-nginx", nginx_tls_body_conf(nginx_port, upstream_port, cert, key))
    nginx_master = processes.start("tls-proxy-nginx", ["nginx", "-c", str(conf), "-p", str(conf.parent)],
                                   cpus=PROXY_CPU)
    deadline = time.monotonic() + 10
    while len(children(nginx_master.pid)) != 1:
        if time.monotonic() > deadline:
            raise BenchError("the TLS nginx did not start its one worker")
        time.sleep(0.1)
    workers = children(nginx_master.pid)
    tokens = TokenKinds(processes, run_dir, secret, ["edge"])
    token = tokens.first["hs256"]
    targets = [Target("nginx-tls", "nginx 1 worker terminating TLS (OpenSSL), HTTP/2 on, no access log",
                      nginx_port, [nginx_master.pid] + workers, workers[0], tokens.scripts["hs256"])]
    port, admin_port, proc = start_edge(processes, run_dir, binaries, "edge-tls", "full", "info", upstream_port,
                                        tokens.edge_env("hs256"),
                                        {"EDGE_TLS_CERT": str(cert), "EDGE_TLS_KEY": str(key)})
    wait_http_ok(admin_port, "/readyz", 20, processes)
    targets.append(Target("edge-tls", "the full edge (as `edge`) terminating TLS (rustls), HTTP/2 by ALPN", port,
                          [proc.pid], proc.pid, tokens.scripts["hs256"]))
    check_tls(targets, token)
    check_edge_behaviour_over_tls(port, token)
    log(f"TLS: nginx on {nginx_port}, edge on {port} (core {PROXY_CPU}), same certificate {cert}")

    scripts = {"keep-alive": tokens.scripts["hs256"], "handshakes": closing_script(run_dir, tokens.scripts["hs256"])}
    for target in targets:
        for load, _ in LOADS:
            measure(target, load, connections, warmup_seconds, token, scripts)

    results = {load: {t.name: [] for t in targets} for load, _ in LOADS}
    for round_no in range(1, rounds + 1):
        for load, _ in LOADS:
            for target in targets:
                processes.check_alive()
                result = measured(target, lambda: measure(target, load, connections, seconds, token, scripts))
                results[load][target.name].append(result)
                log(f"round {round_no} {load:10} {target.name:9} {result['rps']:9.0f} req/s  "
                    f"{result['cpu_us_per_request']:.1f} us/req  errors {result['non_2xx'] + result['socket_errors']}")
                truncate_logs(run_dir, target.name)

    medians = ("rps", "cpu_us_per_request", "proxy_core_share")
    summary = [{"load": load, "description": description,
                "targets": [summary_row(target, results[load][target.name], medians) for target in targets]}
               for load, description in LOADS]
    return {"connections": connections, "seconds": seconds, "rounds": rounds, "h2_streams": H2_STREAMS,
            "path": WRK_PATH, "loads": summary}


def check_tls(targets, token):
    """Both proxies speak TLS and HTTP/2 on the URL the loads use."""
    for target in targets:
        url = f"https://127.0.0.1:{target.port}{WRK_PATH}"
        result = run_h2load(url, 1, 1, token)
        if result["requests"] == 0 or result["non_2xx"] or result["socket_errors"]:
            raise BenchError(f"{target.name}: HTTP/2 over TLS to {url} failed: {result}")


def check_edge_behaviour_over_tls(port, token):
    """The TLS edge does the full edge's work: token check, CORS, limits, headers."""
    import http.client
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the run's own certificate; only the work is checked here
    for headers, expected in (({"authorization": f"Bearer {token}", "origin": ORIGIN}, 200), ({}, 401)):
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=context)
        conn.request("GET", WRK_PATH, headers=headers)
        response = conn.getresponse()
        response.read()
        names = {k.lower() for k, _ in response.getheaders()}
        conn.close()
        if response.status != expected:
            raise BenchError(f"edge-tls: GET {WRK_PATH} with {list(headers)} answered {response.status}, not {expected}")
        wanted = ["content-security-policy", "x-request-id"]
        if expected == 200:
            wanted += ["access-control-allow-origin", "ratelimit-limit"]
        missing = [h for h in wanted if h not in names]
        if missing:
            raise BenchError(f"edge-tls: the {expected} answer lacks {missing}")
