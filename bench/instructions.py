"""Instructions per request of the edge, counted by callgrind: a figure that does not move
with the machine's noise, for before/after comparisons of two builds.

    python3 bench/instructions.py EDGE_BINARY [BASELINE_EDGE_BINARY]

Each binary serves the full benchmark policy (bench/lib/policies.py `full`) in front of a
trivial nginx upstream, under `valgrind --tool=callgrind`, counting only inside Pingora's
per-request session (`process_new_http`: reading the request, every proxy phase, the
upstream exchange, the access log), so background work (health checks, policy polling)
is left out. It runs twice, with N1 and N2 kept-alive `GET /tasks` requests carrying a
valid token and an allowlisted Origin; (I2 - I1) / (N2 - N1) cancels the first
request's one-off costs. The caller's OTEL_* variables reach the edges (a traced edge
builds its spans inside the session; their export runs on another thread, not counted).
Needs valgrind and nginx; every process it starts listens on 127.0.0.1 and is stopped
by PID.

    python3 bench/instructions.py --phases EDGE_BINARY

breaks the figure down by proxy phase (BENCHMARKS.md, issue 17);

    python3 bench/instructions.py --whole-process EDGE_BINARY

counts every thread instead of the request sessions only;

    PLAIN=1 python3 bench/instructions.py .../naive-pingora

counts the naive build as pingora-plain (every filter off); and

    python3 bench/instructions.py --smoke --check debug EDGE_BINARY

is the regression guard `.ci/run` runs on the debug edge the tests built: 100 and 400
requests, and a failure when the figure exceeds the budget that
bench/instructions-budget.json records for that build profile by more than its tolerance
(a figure well under the budget asks for the budget to be lowered)."""

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR / "lib"))
from harness import free_port, free_ports, mint_token, object_id  # noqa: E402
from proxy import ORIGIN, WRK_PATH, naive_env, nginx_conf, upstream_body_conf  # noqa: E402

N1, N2 = 300, 1300
SMOKE_N1, SMOKE_N2 = 100, 400
BUDGET_FILE = BENCH_DIR / "instructions-budget.json"
READY_SECONDS = 120


def get(conn, token):
    conn.request("GET", WRK_PATH, headers={"authorization": f"Bearer {token}", "origin": ORIGIN})
    response = conn.getresponse()
    response.read()
    return response.status


def proxy_env(binary, port, admin, policy_dir, upstream_port, secret):
    """The environment of the edge under test, or of the naive Pingora build
    (bench/naive-pingora, told apart by its binary's name; PLAIN=1 in the caller's
    environment runs it as pingora-plain, every filter off)."""
    if Path(binary).name == "naive-pingora":
        plain = os.environ.get("PLAIN") == "1"
        return {**naive_env(port, upstream_port, secret, plain), "PATH": os.environ["PATH"]}
    return {"LISTEN_ADDR": f"127.0.0.1:{port}", "EDGE_ADMIN_ADDR": f"127.0.0.1:{admin}", "POLICY_DIR": str(policy_dir),
            "JWT_SECRET": secret, "EDGE_THREADS": "1", "SHUTDOWN_GRACE_SECONDS": "0", "RUST_LOG": "info",
            "PATH": os.environ["PATH"],
            # Traces on or off, as the caller's environment says (OTEL_EXPORTER_OTLP_ENDPOINT, ...).
            **{key: value for key, value in os.environ.items() if key.startswith("OTEL_")}}


def count(binary, requests, policy_dir, upstream_port, secret, token, out, whole_process=False):
    """Instructions callgrind counted in the proxy's request sessions (or, `whole_process`,
    in every thread) over `requests` requests (plus the first one, made while waiting for
    the proxy)."""
    port, admin = free_ports(2)
    env = proxy_env(binary, port, admin, policy_dir, upstream_port, secret)
    scope = [] if whole_process else ["--toggle-collect=*process_new_http*"]
    edge = subprocess.Popen(["valgrind", "--tool=callgrind", *scope, f"--callgrind-out-file={out}", str(binary)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + READY_SECONDS
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                if get(conn, token) == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or edge.poll() is not None:
                raise SystemExit(f"{binary} did not answer 200 within {READY_SECONDS} s under callgrind")
            time.sleep(0.5)
        for _ in range(requests):
            status = get(conn, token)
            if status != 200:
                raise SystemExit(f"{binary}: GET {WRK_PATH} answered {status}")
        conn.close()
        edge.send_signal(signal.SIGINT)
        edge.wait(timeout=READY_SECONDS)
    finally:
        if edge.poll() is None:
            edge.kill()
            edge.wait()
    for line in Path(out).read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"no totals in {out}")


# Where the edge's instructions go, by the function (inclusive cost) that does each part;
# nested rows are parts of the row above them. "Pingora, tokio, ..." is what is left.
PHASES = [
    ("early_request_filter (credentials hidden, body timeout)", 0, "ProxyHttp>::early_request_filter::{{closure}}"),
    ("request_filter", 0, "ProxyHttp>::request_filter::{{closure}}"),
    ("routing (lookup, dot segments)", 1, "edge::routing::lookup", "edge::routing::is_ambiguous_path"),
    ("rate limit", 1, "edge::limits::Limiter::check::{{closure}}"),
    ("trace context", 1, "edge::trace::EdgeTracer::start"),
    ("request id", 1, "todo_common::request_id::keep_or_make"),
    ("CORS origin check", 1, "edge::cors::allowed_origin"),
    ("upstream_peer (address choice)", 0, "ProxyHttp>::upstream_peer::{{closure}}"),
    ("upstream_request_filter (forwarding headers)", 0, "ProxyHttp>::upstream_request_filter::{{closure}}"),
    ("response_filter (security, CORS, id, rate-limit headers)", 0, "ProxyHttp>::response_filter::{{closure}}"),
    ("logging", 0, "ProxyHttp>::logging::{{closure}}"),
    ("access log line", 1, "edge::access_log::record"),
    ("client connection layer (head deadline)", 0, "edge::client_conn::ClientConn as tokio::io::async_read"),
]


def inclusive(out):
    """Inclusive instructions per function name of a callgrind output."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(out)], capture_output=True,
                          text=True, check=True).stdout
    costs = {}
    for line in text.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[1].startswith("(") and parts[0][0].isdigit():
            costs[parts[2]] = int(parts[0].replace(",", ""))
    return costs


def phases(first_out, second_out, requests, total):
    """Prints PHASES' share of a request's instructions: the difference of two runs."""
    first, second = inclusive(first_out), inclusive(second_out)

    def cost(patterns):
        def of(costs):
            return sum(max((v for k, v in costs.items() if p in k), default=0) for p in patterns)
        return (of(second) - of(first)) / requests

    top = 0.0
    print(f"{'part':64} {'instructions':>12} {'share':>6}")
    for label, depth, *patterns in PHASES:
        value = cost(patterns)
        top += value if depth == 0 else 0
        print(f"{'  ' * depth + label:64} {value:12.0f} {value / total:6.1%}")
    print(f"{'Pingora, tokio, the allocator (the rest)':64} {total - top:12.0f} {(total - top) / total:6.1%}")


def per_request(binary, n1, n2, policy_dir, upstream_port, secret, token, run_dir, show_phases=False,
                whole_process=False):
    first = count(binary, n1, policy_dir, upstream_port, secret, token, run_dir / "first.out", whole_process)
    second = count(binary, n2, policy_dir, upstream_port, secret, token, run_dir / "second.out", whole_process)
    figure = (second - first) / (n2 - n1)
    print(f"{binary}: {figure:.0f} instructions per request ({first} after {n1 + 1} requests, {second} after "
          f"{n2 + 1})", flush=True)
    if show_phases:
        phases(run_dir / "first.out", run_dir / "second.out", n2 - n1, figure)
    return figure


def check(figure, profile, smoke):
    """Fails when `figure` exceeds the recorded budget of `profile` by more than its tolerance."""
    budgets = json.loads(BUDGET_FILE.read_text())
    tolerance = budgets["tolerance"]
    mode = "smoke" if smoke else "full"
    recorded = budgets[profile][mode]
    limit = recorded * (1 + tolerance)
    change = figure / recorded - 1
    print(f"budget ({profile}, {mode} counts): {recorded} instructions per request, at most {limit:.0f} "
          f"(+{tolerance:.0%}); this build: {figure:.0f} ({change:+.1%})")
    if figure > limit:
        raise SystemExit(f"instruction regression: {figure:.0f} per request, over the budget in {BUDGET_FILE.name}; "
                         "find the cause (callgrind_annotate) or, if the cost is wanted, raise the budget "
                         "in the same commit and say why")
    if figure < recorded * (1 - tolerance):
        print(f"the edge got cheaper: lower the budget in {BUDGET_FILE.name} to keep the guard tight")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_N1} and {SMOKE_N2} requests")
    parser.add_argument("--check", metavar="PROFILE", choices=["debug", "release"],
                        help="compare the first binary with the budget of this build profile")
    parser.add_argument("--phases", action="store_true", help="also break the first binary's figure down by phase")
    parser.add_argument("--whole-process", action="store_true",
                        help="count every thread (the pool's idle-watch tasks, the log writer, timers), not only the "
                             "request sessions; includes time-driven work (health checks), so less repeatable")
    parser.add_argument("binaries", nargs="+", type=Path, metavar="BINARY")
    args = parser.parse_args()
    if args.check and args.whole_process:
        parser.error("--check compares the request sessions' figure with its budget: not with --whole-process")
    n1, n2 = (SMOKE_N1, SMOKE_N2) if args.smoke else (N1, N2)
    with tempfile.TemporaryDirectory(prefix="todo-instructions.") as tmp:
        run_dir = Path(tmp)
        upstream_port = free_port()
        conf = nginx_conf(run_dir, "upstream", upstream_body_conf(upstream_port))
        upstream = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(conf.parent)])
        try:
            policy_dir = run_dir / "policy"
            subprocess.run([sys.executable, str(BENCH_DIR / "lib" / "policies.py"), "full",
                            str(BENCH_DIR.parent / "policies"), str(policy_dir), f"127.0.0.1:{upstream_port}"],
                           check=True, timeout=30)
            secret = os.urandom(24).hex()
            token = mint_token(secret, object_id(), 7200)
            figures = [per_request(binary, n1, n2, policy_dir, upstream_port, secret, token, run_dir,
                                   show_phases=args.phases and i == 0, whole_process=args.whole_process)
                       for i, binary in enumerate(args.binaries)]
        finally:
            upstream.terminate()
            upstream.wait(timeout=10)
    if args.check:
        check(figures[0], args.check, args.smoke)


if __name__ == "__main__":
    main()
