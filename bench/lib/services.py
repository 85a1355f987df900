"""The service scenarios: login throughput against the bcrypt hash rate (with /healthz
sampled meanwhile), cached against uncached task lists, and the delay from completing a
task to its notification being stored, at a steady completion rate.

The services run in release mode on both cores (not pinned) against the local MongoDB
surrogate, Redis and RabbitMQ, with databases, a Redis key prefix and queue names of
their own."""

import http.client
import json
import os
import queue
import re
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness import (
    BENCH_DIR,
    BenchError,
    CpuShare,
    listener_pid,
    free_port,
    log,
    median,
    metric,
    mint_token,
    object_id,
    percentile,
    port_open,
    prometheus_value,
    request,
    run_wrk,
    wait_http_ok,
    wait_until,
)

EXCHANGE = "bench.task.events"
NOTIFY_QUEUE = "bench.notify.events"


MONGODB_URI = {"value": "mongodb://127.0.0.1:27017"}


def mongodb_pid():
    """The local MongoDB (surrogate) process, to report how busy it was."""
    match = re.match(r"mongodb://(?:[^@/]*@)?127\.0\.0\.1:(\d+)", MONGODB_URI["value"])
    return listener_pid(int(match.group(1))) if match else None


def service_env(run_id, secret, port, extra):
    env = {
        "LISTEN_ADDR": f"127.0.0.1:{port}",
        "MONGODB_URI": MONGODB_URI["value"],
        "JWT_SECRET": secret,
        "SHUTDOWN_GRACE_SECONDS": "1",
        "RUST_LOG": "warn",
    }
    env.update(extra)
    return env


def start_service(processes, binaries, name, binary, env, port):
    processes.start(name, [str(binaries / binary)], env=env)
    wait_http_ok(port, "/healthz", 20, processes)
    wait_http_ok(port, "/readyz", 30, processes)


def median_or_none(values):
    values = [v for v in values if v is not None]
    return median(values) if values else None


def over_rounds(results, key, pick=median):
    """`pick` (the median unless told) of one figure over the rounds' results."""
    return pick([r[key] for r in results])


# --- login against the hash rate ----------------------------------------------------

def login_scenario(processes, run_dir, binaries, bcrypt_rate, run_id, secret, cost, hash_seconds, seconds):
    cores = os.cpu_count()

    def measure_hash_rate():
        log(f"bcrypt hash rate at cost {cost} on {cores} threads ({hash_seconds} s)")
        done = subprocess.run([str(bcrypt_rate), str(cost), str(cores), str(hash_seconds)], capture_output=True,
                              text=True, timeout=hash_seconds + 120)
        if done.returncode != 0:
            raise BenchError(f"bcrypt-rate failed: {done.stderr.strip()}")
        return json.loads(done.stdout)["hashes_per_second"]

    # Before and after the logins, averaged: other load on a shared machine drifts.
    hash_rate_before = measure_hash_rate()

    port = free_port()
    env = service_env(run_id, secret, port, {"MONGODB_DB": f"bench_{run_id}_users", "BCRYPT_COST": str(cost)})
    start_service(processes, binaries, "svc-users", "svc-users", env, port)
    # Enough clients to keep the hashing pool (one permit per core) always busy. Each logs
    # in as a user of its own, as real users do: svc-users takes one of an account's 5
    # guesses per login in flight, so more than 5 concurrent logins of one account would
    # be refused (429) before their password is checked.
    clients = 4 * cores
    accounts = []
    for index in range(clients):
        credentials = {"email": f"bench-{run_id}-{index}@example.com", "password": "bench-password-123"}
        status, body = request(port, "POST", "/users/register", credentials, timeout=30)
        if status not in (201, 409):
            raise BenchError(f"register answered {status}: {body}")
        accounts.append(credentials)
    completions, failures = [], []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(credentials):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < deadline:
            try:
                status, _ = request(port, "POST", "/users/login", credentials, conn=conn)
            except OSError as e:
                status = str(e)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            with lock:
                (completions if status == 200 else failures).append((time.monotonic(), status))
        conn.close()

    log(f"login load: {clients} clients for {seconds} s, /healthz sampled every 20 ms")
    sampler = subprocess.Popen(
        ["python3", str(BENCH_DIR / "lib" / "sampler.py"), str(port), "/healthz", "20", str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    threads = [threading.Thread(target=client, args=(credentials,)) for credentials in accounts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 60)
    try:
        sampled, _ = sampler.communicate(timeout=30)
    finally:
        if sampler.poll() is None:
            sampler.kill()
    health = json.loads(sampled)
    processes.check_alive()
    hash_rate_after = measure_hash_rate()
    hash_rate = (hash_rate_before + hash_rate_after) / 2
    if failures:
        raise BenchError(f"{len(failures)} logins failed, e.g. {failures[0][1]}")
    times = sorted(t for t, _ in completions)
    if len(times) < 3:
        raise BenchError(f"only {len(times)} logins completed in {seconds} s")
    # Steady state: from the first completion to the last, so pipeline fill and the
    # requests cut off at the deadline do not count.
    login_rate = (len(times) - 1) / (times[-1] - times[0])
    latencies = health["latencies_ms"]
    result = {
        "bcrypt_cost": cost,
        "cores": cores,
        "hash_rate": hash_rate,
        "hash_rate_before": hash_rate_before,
        "hash_rate_after": hash_rate_after,
        "login_rate": login_rate,
        "logins": len(times),
        "login_vs_hash_rate": login_rate / hash_rate,
        "healthz_samples": len(latencies),
        "healthz_failures": health["failures"],
        "healthz_p50_ms": percentile(latencies, 50),
        "healthz_p99_ms": percentile(latencies, 99),
        "healthz_max_ms": max(latencies) if latencies else float("nan"),
    }
    log(
        f"hash rate {hash_rate:.2f}/s, logins {login_rate:.2f}/s ({result['login_vs_hash_rate']:.0%}), "
        f"/healthz p50 {result['healthz_p50_ms']:.2f} ms p99 {result['healthz_p99_ms']:.2f} ms"
    )
    return result


# --- tasks: cached and uncached lists, completion to notification -------------------

def start_tasks(processes, binaries, run_id, secret):
    port = free_port()
    start_service(processes, binaries, "svc-tasks-cached", "svc-tasks",
                  service_env(run_id, secret, port, tasks_env(run_id)), port)
    return port


def start_notify(processes, binaries, run_id, secret):
    """Started after the tasks exist: its queue is declared and bound only now, so the
    task.created events of the set-up went nowhere and only completions are consumed."""
    port = free_port()
    start_service(processes, binaries, "svc-notify", "svc-notify",
                  service_env(run_id, secret, port,
                              {"MONGODB_DB": f"bench_{run_id}_notify", "AMQP_EXCHANGE": EXCHANGE,
                               "AMQP_QUEUE": NOTIFY_QUEUE}),
                  port)
    wait_until("svc-notify consumer connected", lambda: metric(port, "events_consumer_connected") >= 1, 30,
               processes, interval=0.2)
    return port


def tasks_env(run_id):
    return {"MONGODB_DB": f"bench_{run_id}_tasks", "AMQP_EXCHANGE": EXCHANGE, "REDIS_KEY_PREFIX": f"bench:{run_id}:"}


def start_uncached_tasks(processes, binaries, run_id, secret):
    """Two more svc-tasks on the same database, started only once the outbox is empty
    and stopped before more writes (their relays, unable to bump cache versions, would
    leave entries for the cached instance to bump later, invalidating its lists):

    - uncached: its Redis (a private redis-server refusing every write: maxmemory 1,
      noeviction) answers every lookup with a miss and cannot store the page, so each
      read is the real miss path: two Redis GETs, the MongoDB query, a refused SET;
    - redis-down: REDIS_URL at a closed port, the outage mode."""
    miss_port, uncached_port, down_port, closed_port = free_port(), free_port(), free_port(), free_port()
    if port_open(closed_port):
        raise BenchError("no closed port for the redis-down instance")
    processes.start("redis-miss", ["redis-server", "--port", str(miss_port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--maxmemory", "1", "--maxmemory-policy", "noeviction"])
    wait_until("private redis-server", lambda: port_open(miss_port), 10, processes)
    env = dict(tasks_env(run_id), REDIS_URL=f"redis://127.0.0.1:{miss_port}")
    start_service(processes, binaries, "svc-tasks-uncached", "svc-tasks", service_env(run_id, secret, uncached_port, env),
                  uncached_port)
    env = dict(tasks_env(run_id), REDIS_URL=f"redis://127.0.0.1:{closed_port}")
    start_service(processes, binaries, "svc-tasks-redis-down", "svc-tasks", service_env(run_id, secret, down_port, env),
                  down_port)
    return uncached_port, down_port


def wait_cache_warm(processes, port, headers):
    """Until two list reads in a row are hits: every pending version bump is done."""
    streak = 0
    deadline = time.monotonic() + 30
    while streak < 2:
        if time.monotonic() > deadline:
            raise BenchError("the task list never stayed cached")
        hits = metric(port, "cache_requests_total", {"result": "hit"})
        status, _ = request(port, "GET", "/tasks", headers=headers)
        if status != 200:
            raise BenchError(f"GET /tasks answered {status}")
        streak = streak + 1 if metric(port, "cache_requests_total", {"result": "hit"}) > hits else 0
        processes.check_alive()


def create_tasks(port, tokens, count, workers=16):
    """Creates `count` tasks spread over the users; returns [(token, task id)]."""
    local = threading.local()

    def one(i):
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        token = tokens[i % len(tokens)]
        # Set-up, not measured: a 503 (the database briefly overloaded) is retried a few times.
        for attempt in range(5):
            status, body = request(port, "POST", "/tasks", {"title": f"bench task {i}", "priority": "normal"},
                                   headers={"authorization": f"Bearer {token}"}, conn=local.conn)
            if status != 503:
                break
            time.sleep(0.5 * (attempt + 1))
        if status != 201:
            raise BenchError(f"POST /tasks answered {status}: {body}")
        return token, body["id"]

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, range(count)))


def cache_scenario(processes, binaries, run_id, cached_port, secret, rounds, seconds, list_size):
    token = mint_token(secret, object_id())
    create_tasks(cached_port, [token], list_size, workers=4)
    # The outbox relay bumps the owner's cache version once per event it relays: wait
    # until it is done, or the first cached reads miss.
    wait_until("svc-tasks events relayed",
               lambda: metric(cached_port, "events_published_total") >= list_size
               and metric(cached_port, "outbox_backlog") == 0, 120, processes, interval=0.2)
    headers = {"authorization": f"Bearer {token}"}
    wait_cache_warm(processes, cached_port, headers)
    uncached_port, down_port = start_uncached_tasks(processes, binaries, run_id, secret)
    for port in (uncached_port, down_port):
        status, body = request(port, "GET", "/tasks", headers=headers)
        if status != 200 or len(body["items"]) != min(list_size, 50):
            raise BenchError(f"GET /tasks on {port}: {status}, {len(body.get('items', [])) if body else 0} items")

    script = Path(processes.run_dir) / "list.lua"
    script.write_text(f'wrk.method = "GET"\nwrk.headers["Authorization"] = "Bearer {token}"\n')
    rows = {"cached": [], "uncached": [], "redis-down": []}
    hits = misses = errors = cached_requests = 0
    for round_no in range(1, rounds + 1):
        for name, port in (("cached", cached_port), ("uncached", uncached_port), ("redis-down", down_port)):
            before = {r: metric(port, "cache_requests_total", {"result": r}) for r in ("hit", "miss", "error")}
            mongo = CpuShare(mongodb_pid())
            result = run_wrk(f"http://127.0.0.1:{port}/tasks", 1, 16, seconds, script)
            result["mongodb_cpu_share"] = mongo.share()
            after = {r: metric(port, "cache_requests_total", {"result": r}) for r in ("hit", "miss", "error")}
            processes.check_alive()
            bad = result["non_2xx"] + result["socket_errors"]
            if bad:
                raise BenchError(f"GET /tasks {name}: {bad} errors")
            delta = {r: after[r] - before[r] for r in after}
            # wrk counts only answered requests; the cache counter also sees the few cut
            # off at the deadline.
            result["cache"] = delta
            rows[name].append(result)
            if name == "cached":
                hits += delta["hit"]
                misses += delta["miss"]
                errors += delta["error"]
                cached_requests += result["requests"]
            log(f"round {round_no} GET /tasks {name:10} {result['rps']:8.0f} req/s  p99 {result['p99_ms']:.2f} ms  "
                f"cache {delta}")
    for name, proc in list(processes.started):
        if name in ("svc-tasks-uncached", "svc-tasks-redis-down", "redis-miss"):
            processes.stop(proc)
    cached_rps = over_rounds(rows["cached"], "rps")
    uncached_rps = over_rounds(rows["uncached"], "rps")
    return {
        "list_size": list_size,
        "connections": 16,
        "seconds": seconds,
        "rounds": rounds,
        "cached_rps": cached_rps,
        "uncached_rps": uncached_rps,
        "cached_p99_ms": over_rounds(rows["cached"], "p99_ms"),
        "uncached_p99_ms": over_rounds(rows["uncached"], "p99_ms"),
        "ratio": cached_rps / uncached_rps,
        "cached_requests": cached_requests,
        "cached_hits": hits,
        "cached_misses": misses,
        "cached_errors": errors,
        "mongodb_cpu_share_cached": over_rounds(rows["cached"], "mongodb_cpu_share", median_or_none),
        "mongodb_cpu_share_uncached": over_rounds(rows["uncached"], "mongodb_cpu_share", median_or_none),
        "uncached_cache_results": {k: sum(r["cache"][k] for r in rows["uncached"]) for k in ("hit", "miss", "error")},
        "redis_down_rps": over_rounds(rows["redis-down"], "rps"),
        "redis_down_p50_ms": over_rounds(rows["redis-down"], "p50_ms"),
        "redis_down_p99_ms": over_rounds(rows["redis-down"], "p99_ms"),
        "redis_down_cache_results": {k: sum(r["cache"][k] for r in rows["redis-down"]) for k in ("hit", "miss", "error")},
    }


def notify_scenario(processes, binaries, run_id, tasks_port, secret, rate, seconds, users):
    tokens = [mint_token(secret, object_id()) for _ in range(users)]
    count = int(rate * seconds)
    published_start = metric(tasks_port, "events_published_total")
    log(f"creating {count} tasks for {users} users")
    started = time.monotonic()
    tasks = create_tasks(tasks_port, tokens, count)
    log(f"created in {time.monotonic() - started:.1f} s; waiting for their events to be relayed")
    wait_until("svc-tasks events relayed",
               lambda: metric(tasks_port, "events_published_total") >= published_start + count
               and metric(tasks_port, "outbox_backlog") == 0, 300, processes, interval=0.5)
    notify_port = start_notify(processes, binaries, run_id, secret)
    base = metric(notify_port, "events_consumed_total")

    # Polls the consumed-events counter; the k-th increment after `base` is taken as the
    # k-th completion's notification being stored (one queue, consumed in order).
    observed = []  # (monotonic time, count)
    stop_polling = threading.Event()

    def poll():
        conn = http.client.HTTPConnection("127.0.0.1", notify_port, timeout=5)
        last = base
        while not stop_polling.is_set():
            try:
                status, text = request(notify_port, "GET", "/metrics", conn=conn)
            except OSError:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", notify_port, timeout=5)
                continue
            now = time.monotonic()
            value = prometheus_value(text, "events_consumed_total")
            if value != last:
                observed.append((now, value - base))
                last = value
            time.sleep(0.002)
        conn.close()

    poller = threading.Thread(target=poll)
    poller.start()

    jobs = queue.Queue()
    sent = [None] * count  # (send time, answer time, status)
    local = threading.local()

    def worker():
        while True:
            job = jobs.get()
            if job is None:
                return
            i, (token, task_id) = job
            if not hasattr(local, "conn"):
                local.conn = http.client.HTTPConnection("127.0.0.1", tasks_port, timeout=30)
            t0 = time.monotonic()
            try:
                status, _ = request(tasks_port, "POST", f"/tasks/{task_id}/complete",
                                    headers={"authorization": f"Bearer {token}"}, conn=local.conn)
            except OSError as e:
                status = str(e)
                local.conn = http.client.HTTPConnection("127.0.0.1", tasks_port, timeout=30)
            sent[i] = (t0, time.monotonic(), status)

    workers = [threading.Thread(target=worker) for _ in range(48)]
    for w in workers:
        w.start()
    log(f"completing {count} tasks at {rate}/s")
    mongo = CpuShare(mongodb_pid())
    t_start = time.monotonic()
    for i, task in enumerate(tasks):
        delay = t_start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        jobs.put((i, task))
    for _ in workers:
        jobs.put(None)
    for w in workers:
        w.join(timeout=120)
    mongodb_cpu_share = mongo.share()
    try:
        # Bounded, but long enough for a consumer far slower than the completion rate.
        wait_until("task.completed notifications stored",
                   lambda: bool(observed) and observed[-1][1] >= count, min(900, 120 + count / 4), processes,
                   interval=0.2)
    finally:
        stop_polling.set()
        poller.join(timeout=10)

    failed = [s for s in sent if s is None or s[2] != 200]
    if failed:
        raise BenchError(f"{len(failed)} completions failed, e.g. {failed[0]}")
    send_times = sorted(s[0] for s in sent)
    achieved = (count - 1) / (send_times[-1] - send_times[0]) if count > 1 else float("nan")
    latencies = []
    cursor = 0
    for k, sent_at in enumerate(send_times, start=1):
        while observed[cursor][1] < k:
            cursor += 1
        latencies.append((observed[cursor][0] - sent_at) * 1000)
    request_ms = [(s[1] - s[0]) * 1000 for s in sent]

    # Exactly one task.completed notification per completed task.
    completed_seen = {}
    for token in tokens:
        path = "/notifications?limit=100"
        while path:
            status, body = request(notify_port, "GET", path, headers={"authorization": f"Bearer {token}"})
            if status != 200:
                raise BenchError(f"GET /notifications answered {status}")
            for item in body["items"]:
                if item["type"] == "task.completed":
                    completed_seen[item["taskId"]] = completed_seen.get(item["taskId"], 0) + 1
            path = f"/notifications?limit=100&cursor={body['nextCursor']}" if body.get("nextCursor") else None
    expected = {task_id for _, task_id in tasks}
    exact = set(completed_seen) == expected and all(v == 1 for v in completed_seen.values())
    result = {
        "target_rate": rate,
        "achieved_rate": achieved,
        "completions": count,
        "users": users,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies),
        "complete_request_p50_ms": percentile(request_ms, 50),
        "complete_request_p99_ms": percentile(request_ms, 99),
        "exactly_once": exact,
        # How fast notifications were stored once they flowed: the consumer's capacity.
        "stored_rate": (observed[-1][1] - observed[0][1]) / (observed[-1][0] - observed[0][0])
        if len(observed) > 1 else float("nan"),
        "mongodb_cpu_share": mongodb_cpu_share,
    }
    if not exact:
        raise BenchError(f"notifications do not match completions one to one ({len(completed_seen)} of {count})")
    log(f"completion→notification p50 {result['p50_ms']:.1f} ms p99 {result['p99_ms']:.1f} ms "
        f"(completions sent at {achieved:.1f}/s, notifications stored at {result['stored_rate']:.1f}/s)")
    return result


def delete_queues():
    for q in (NOTIFY_QUEUE, NOTIFY_QUEUE + ".dlq"):
        subprocess.run(["rabbitmqctl", "-q", "delete_queue", q], capture_output=True, timeout=60)
