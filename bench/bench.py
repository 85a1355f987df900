"""Runs the benchmark scenarios (called by bench/run.sh, which builds the binaries
first). Stops every process it started, by PID, on every exit path."""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "lib"))

import proxy  # noqa: E402
import report  # noqa: E402
import services  # noqa: E402
import tls  # noqa: E402
from harness import BenchError, Processes, log, machine, run_wrk  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent

FULL = {
    "rounds": 3, "seconds": 10, "warmup": 3,
    "hash_seconds": 10, "login_seconds": 15,
    "cache_rounds": 3, "cache_seconds": 5,
    "notify_rate": 200, "notify_seconds": 5,
}
SMOKE = {
    "rounds": 1, "seconds": 1, "warmup": 1,
    "hash_seconds": 2, "login_seconds": 3,
    "cache_rounds": 1, "cache_seconds": 1,
    "notify_rate": 200, "notify_seconds": 0.25,
}


def arguments():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--smoke", action="store_true", help="a few-seconds run that only proves the harness works")
    p.add_argument("--binaries", required=True, type=Path, help="directory of the release binaries")
    p.add_argument("--bcrypt-rate", required=True, type=Path, help="the bcrypt-rate binary")
    p.add_argument("--run-dir", required=True, type=Path, help="scratch directory (configs, logs, pid list)")
    p.add_argument("--only", choices=["proxy", "tls", "services"],
                   help="run one part only: the plain proxy comparison, the TLS one, or the service scenarios")
    p.add_argument("--rounds", type=int)
    p.add_argument("--seconds", type=int, help="wrk duration of each proxy round")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--bcrypt-cost", type=int, default=12)
    p.add_argument("--edges",
                   default="edge,edge-shared,edge-bare,edge-bare-nolog,edge-eddsa,edge-nocache,edge-eddsa-nocache,"
                           "edge-traced,edge-traced-1pct,naive,pingora-plain",
                   help="edge configurations besides nginx (edge, edge-shared, edge-bare, edge-bare-nolog, edge-eddsa, "
                        "edge-nocache, edge-eddsa-nocache, edge-traced, edge-traced-1pct; edge-baseline: the edge "
                        "binary BENCH_BASELINE_EDGE names; naive: the naive Pingora build of bench/naive-pingora; "
                        "pingora-plain: that build with every filter off)")
    p.add_argument("--mongodb-uri", default=os.environ.get("BENCH_MONGODB_URI", "mongodb://127.0.0.1:27017"),
                   help="MongoDB the services use (default: BENCH_MONGODB_URI or the local one)")
    p.add_argument("--profile", action="store_true",
                   help="also perf-profile the full edge under load (and the TLS edge, when the TLS comparison runs)")
    p.add_argument("--secret", default=None, help=argparse.SUPPRESS)
    return p.parse_args()


def profile_edge(run_dir, url, pid, seconds, out_path):
    """perf samples of the edge under the benchmark load (wrk -c64 keep-alive on `url`):
    self time per symbol, and summed by library / Rust crate."""
    data = run_dir / "perf.data"
    recorder = subprocess.Popen(["perf", "record", "-F", "1999", "-o", str(data), "-p", str(pid), "--", "sleep",
                                 str(seconds)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        run_wrk(url, 1, 64, seconds, run_dir / "bearer.lua", cpus=proxy.LOAD_CPU)
    finally:
        recorder.wait(timeout=seconds + 30)
    done = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children", "--sort", "dso,symbol",
                           "--percent-limit", "0"], capture_output=True, text=True, timeout=120)
    rows = []
    for line in done.stdout.splitlines():
        match = re.match(r"^\s*([\d.]+)%\s+(\S+)\s+\[([.k])\]\s+(.*?)\s*(?:-\s+-\s*)?$", line)
        if match:
            rows.append((float(match.group(1)), match.group(2), match.group(4).strip()))
    groups = {}
    for pct, dso, symbol in rows:
        if dso == "[kernel.kallsyms]":
            key = "kernel (TCP/IP, syscalls, scheduler)"
        elif dso.startswith("libc"):
            key = "libc malloc/free/realloc" if re.search(r"malloc|free|realloc|_int_|unlink_chunk|consolidate",
                                                          symbol) else "libc other (memcpy, ...)"
        elif dso == "edge":
            # `<A as B>::f` counts for A's crate, or B's when A is a primitive or generic.
            parts = symbol.lstrip("<").split(" as ")
            first = parts[0].replace("&mut ", "").lstrip("&")
            name = first if "::" in first or len(parts) == 1 else parts[1]
            key = "edge: " + name.split("::")[0]
        else:
            key = dso
        groups[key] = groups.get(key, 0.0) + pct
    lines = [f"perf record -F 1999 -p <edge> for {seconds} s under wrk -t1 -c64 {url} (full policy, release build)", "",
             "Self time by library / crate:", ""]
    lines += [f"{pct:6.2f}%  {key}" for key, pct in sorted(groups.items(), key=lambda kv: -kv[1])[:25]]
    lines += ["", "Hottest symbols:", ""]
    lines += [f"{pct:6.2f}%  {dso:18} {symbol[:150]}" for pct, dso, symbol in rows[:45]]
    out_path.write_text("\n".join(lines) + "\n")
    log(f"profile written to {out_path}")


def main():
    args = arguments()
    plan = dict(SMOKE if args.smoke else FULL)
    if args.rounds:
        plan["rounds"] = plan["cache_rounds"] = args.rounds
    if args.seconds:
        plan["seconds"] = args.seconds
    secret = args.secret or os.urandom(24).hex()  # 48 bytes
    run_id = time.strftime("%Y%m%d%H%M%S")
    args.run_dir.mkdir(parents=True, exist_ok=True)
    processes = Processes(args.run_dir)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    results = {
        "smoke": args.smoke,
        "started": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "command": "bash bench/run.sh" + (" --smoke" if args.smoke else "") + (f" --only {args.only}" if args.only else "")
        + (" --profile" if args.profile else "")
        + (f" --mongodb-uri {args.mongodb_uri}" if args.mongodb_uri != "mongodb://127.0.0.1:27017" else ""),
        "machine": machine(),
        "plan": plan,
    }
    started = time.monotonic()
    status = 0
    try:
        if args.only in (None, "proxy"):
            edges = [e.strip() for e in args.edges.split(",") if e.strip()]
            results["proxy"] = proxy.run(processes, args.run_dir, args.binaries, secret, plan["rounds"],
                                         plan["seconds"], plan["warmup"], args.connections, edges)
            if args.profile:
                edge = next(t for t in results["proxy"]["targets"] if t["name"] == "edge")
                profile_edge(args.run_dir, f"http://127.0.0.1:{edge['port']}{proxy.WRK_PATH}", edge["pid"],
                             plan["seconds"], BENCH_DIR / "results" / "profile-edge.txt")
            processes.stop_all()
        if args.only in (None, "tls"):
            results["tls"] = tls.run(processes, args.run_dir, args.binaries, secret, plan["rounds"], plan["seconds"],
                                     plan["warmup"], args.connections)
            if args.profile:
                edge = next(t for t in results["tls"]["loads"][0]["targets"] if t["name"] == "edge-tls")
                profile_edge(args.run_dir, f"https://127.0.0.1:{edge['port']}{proxy.WRK_PATH}", edge["pid"],
                             plan["seconds"], BENCH_DIR / "results" / "profile-edge-tls.txt")
            processes.stop_all()
        if args.only in (None, "services"):
            services.MONGODB_URI["value"] = args.mongodb_uri
            services.delete_queues()  # left by an interrupted run
            results["services"] = {}
            results["services"]["login"] = services.login_scenario(
                processes, args.run_dir, args.binaries, args.bcrypt_rate, run_id, secret, args.bcrypt_cost,
                plan["hash_seconds"], plan["login_seconds"])
            tasks_port = services.start_tasks(processes, args.binaries, run_id, secret)
            results["services"]["cache"] = services.cache_scenario(processes, args.binaries, run_id, tasks_port, secret,
                                                                   plan["cache_rounds"], plan["cache_seconds"], 20)
            results["services"]["notify"] = services.notify_scenario(processes, args.binaries, run_id, tasks_port,
                                                                     secret, plan["notify_rate"],
                                                                     plan["notify_seconds"], 10)
    except BenchError as e:
        log(f"FAILED: {e}")
        status = 1
    except KeyboardInterrupt as e:
        log(f"interrupted ({e})")
        status = 130
    except Exception as e:  # noqa: BLE001 - report any failure, then still clean up
        log(f"FAILED: {type(e).__name__}: {e}")
        status = 1
    finally:
        processes.stop_all()
        if args.only in (None, "services"):
            services.delete_queues()

    results["elapsed_s"] = time.monotonic() - started
    with open("/proc/loadavg") as f:
        results["load_at_end"] = " ".join(f.read().split()[:3])

    # A run with errors measured something else than proxying: refuse it.
    measured = [(t["name"], t) for t in results.get("proxy", {}).get("targets", [])]
    measured += [(f"{t['name']} ({load['load']})", t) for load in results.get("tls", {}).get("loads", [])
                 for t in load["targets"]]
    for name, t in measured if status == 0 else []:
        allowed = max(10, t["requests"] // 1000)
        if t["errors"] > allowed:
            log(f"FAILED: {name} had {t['errors']} errors or non-2xx answers (allowed {allowed})")
            status = 1

    if "proxy" in results or "tls" in results or results.get("services"):
        stem = "smoke" if args.smoke else "latest"
        out_dir = BENCH_DIR / "results"
        out_dir.mkdir(exist_ok=True)
        chart = f"{stem}.svg"
        if "proxy" in results:
            (out_dir / chart).write_text(report.svg_chart(results["proxy"]))
        (out_dir / f"{stem}.md").write_text(report.markdown(results, chart))
        (out_dir / f"{stem}.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
        print()
        print(report.text_table(results))
        print()
        log(f"results: {out_dir}/{stem}.md, {stem}.svg, {stem}.json")
    log(f"{'OK' if status == 0 else 'FAILED'} in {results['elapsed_s']:.1f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
