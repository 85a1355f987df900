"""What every scenario needs: tokens, free ports, processes stopped by PID, HTTP calls
with timeouts, wrk runs and their parsed output, /proc readings, percentiles."""

import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# bench/: the wrk scripts and lib/ are below it, the repository above.
BENCH_DIR = Path(__file__).resolve().parent.parent


class BenchError(Exception):
    """A failure that makes the run invalid: a process did not start, a request failed."""


def log(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- tokens -------------------------------------------------------------------------

def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(alg, sign, subject, ttl_seconds, kid, issuer, audience):
    now = int(time.time())
    header = {"alg": alg, "typ": "JWT", "kid": kid}
    claims = {"sub": subject, "iat": now, "exp": now + ttl_seconds, "iss": issuer, "aud": audience}
    signing_input = _b64(json.dumps(header, separators=(",", ":")).encode()) + "." + _b64(
        json.dumps(claims, separators=(",", ":")).encode()
    )
    return signing_input + "." + _b64(sign(signing_input.encode()))


def mint_token(secret, subject, ttl_seconds=7200, kid="primary", issuer="todo-users", audience="todo-api"):
    """An HS256 access token as svc-users issues it in the compatibility mode (JWT_SECRET)."""
    return _jwt("HS256", lambda data: hmac.new(secret.encode(), data, hashlib.sha256).digest(), subject, ttl_seconds,
                kid, issuer, audience)


def mint_eddsa_token(key, subject, ttl_seconds=7200, kid="primary", issuer="todo-users", audience="todo-api"):
    """An EdDSA access token as svc-users issues it; `key` is an ed25519.SigningKey."""
    return _jwt("EdDSA", key.sign, subject, ttl_seconds, kid, issuer, audience)


def object_id():
    """A fresh 24-hex-digit id, shaped like the ids svc-users gives users."""
    return os.urandom(12).hex()


# --- ports and processes ------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(count):
    """`count` free ports, all different (each stays bound until all are read)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Processes:
    """Every process the run starts; each is stopped by its PID, whatever happens.

    PIDs are also written to `pid_file` so the shell wrapper's trap can stop them if
    this interpreter itself is killed."""

    def __init__(self, run_dir):
        self.run_dir = Path(run_dir)
        self.pid_file = self.run_dir / "pids"
        self.started = []  # (name, Popen)

    def start(self, name, argv, env=None, cpus=None, stdout=None):
        if cpus is not None:
            argv = ["taskset", "-c", cpus] + list(argv)
        out = open(stdout or self.run_dir / f"{name}.out", "ab")
        err = open(self.run_dir / f"{name}.err", "ab")
        full_env = dict(os.environ)
        full_env.update(env or {})
        proc = subprocess.Popen(argv, env=full_env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        out.close()
        err.close()
        self.started.append((name, proc))
        with open(self.pid_file, "a") as f:
            f.write(f"{proc.pid} {start_time(proc.pid)}\n")
        return proc

    def check_alive(self):
        for name, proc in self.started:
            if proc.poll() is not None:
                raise BenchError(f"{name} exited with status {proc.returncode}; see {self.run_dir}/{name}.err")

    def stop(self, proc, grace=5.0):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self.started = [(n, p) for n, p in self.started if p is not proc]

    def stop_all(self):
        for _, proc in reversed(self.started):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 8
        for _, proc in reversed(self.started):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self.started = []


def start_time(pid):
    """Field 22 of /proc/PID/stat: with the PID, names this very process (PIDs get reused)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except OSError:
        return "0"


def wait_until(what, predicate, timeout, processes=None, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if processes is not None:
            processes.check_alive()
        if predicate():
            return
        time.sleep(interval)
    raise BenchError(f"{what}: not ready within {timeout:.0f} s")


def wait_http_ok(port, path, timeout, processes=None, headers=None):
    def ok():
        try:
            return request(port, "GET", path, headers=headers, timeout=1)[0] == 200
        except OSError:
            return False

    wait_until(f"127.0.0.1:{port}{path}", ok, timeout, processes)


# --- HTTP ---------------------------------------------------------------------------

def request(port, method, path, body=None, headers=None, timeout=10, conn=None):
    """(status, parsed JSON or text or None). Opens a connection unless one is given."""
    own = conn is None
    if own:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        all_headers = dict(headers or {})
        if data is not None:
            all_headers["content-type"] = "application/json"
        conn.request(method, path, body=data, headers=all_headers)
        response = conn.getresponse()
        raw = response.read()
        ctype = response.getheader("content-type", "")
        if "json" in ctype and raw:
            return response.status, json.loads(raw)
        return response.status, raw.decode(errors="replace") if raw else None
    finally:
        if own:
            conn.close()


def prometheus_value(text, name, labels=None):
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in (labels or {}).items()):
            total += float(match.group(3))
    return total


def metric(port, name, labels=None):
    status, text = request(port, "GET", "/metrics", timeout=5)
    if status != 200:
        raise BenchError(f"GET /metrics on {port}: {status}")
    return prometheus_value(text, name, labels)


# --- wrk ----------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(value):
    match = re.match(r"^([\d.]+)(us|ms|s|m)$", value)
    if not match:
        raise BenchError(f"cannot read wrk latency {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(text):
    result = {"non_2xx": 0, "socket_errors": 0}
    for key, pct in (("p50_ms", "50%"), ("p75_ms", "75%"), ("p90_ms", "90%"), ("p99_ms", "99%")):
        match = re.search(rf"^\s+{re.escape(pct)}\s+(\S+)", text, re.M)
        if match:
            result[key] = _ms(match.group(1))
    match = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise BenchError(f"cannot read wrk output:\n{text}")
    result["requests"] = int(match.group(1))
    result["duration_s"] = float(match.group(2)) * _UNITS[match.group(3)] / 1000
    match = re.search(r"Requests/sec:\s+([\d.]+)", text)
    result["rps"] = float(match.group(1)) if match else result["requests"] / result["duration_s"]
    match = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if match:
        result["non_2xx"] = int(match.group(1))
    match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if match:
        result["socket_errors"] = sum(int(g) for g in match.groups())
    return result


def run_wrk(url, threads, connections, seconds, script=None, cpus=None, env=None, timeout_extra=20):
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    if script:
        argv += ["-s", str(script)]
    argv.append(url)
    if cpus is not None:
        argv = ["taskset", "-c", cpus] + argv
    full_env = dict(os.environ)
    full_env.update(env or {})
    done = subprocess.run(argv, capture_output=True, text=True, env=full_env, timeout=seconds + timeout_extra)
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    result = parse_wrk(done.stdout)
    result["raw"] = done.stdout
    return result


# --- /proc --------------------------------------------------------------------------

def cpu_split(pid):
    """(utime, stime) of the whole process (every thread), in seconds: its own code, and
    the kernel's work for it (system calls, TCP)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, so utime (14) and stime (15) sit at 11, 12.
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def cpu_seconds(pid):
    """utime + stime of the whole process (every thread), in seconds."""
    return sum(cpu_split(pid))


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise BenchError(f"/proc/{pid}/status has no {key}")


def listener_pid(port):
    """PID of the process listening on 127.0.0.1:PORT, when visible (else None)."""
    try:
        out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"pid=(\d+)", out)
    return int(match.group(1)) if match else None


class CpuShare:
    """CPU used by a process over a span of wall time, as a share of one core."""

    def __init__(self, pid):
        self.pid = pid
        self.started = time.monotonic()
        self.cpu = self._read()

    def _read(self):
        try:
            return cpu_seconds(self.pid) if self.pid else None
        except OSError:
            return None

    def share(self):
        now = self._read()
        if now is None or self.cpu is None:
            return None
        return (now - self.cpu) / (time.monotonic() - self.started)


def children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    found.append(int(entry))
            except OSError:
                continue
    return found


# --- statistics ---------------------------------------------------------------------

def percentile(values, pct):
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(pct / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def median(values):
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return float("nan")
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def machine():
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": os.uname().release, "load_at_start": load}


def fail(message):
    print(f"bench: FAILED: {message}", file=sys.stderr, flush=True)
    sys.exit(1)
