"""`sampler.py PORT PATH INTERVAL_MS SECONDS`: GETs PATH every INTERVAL_MS on one
keep-alive connection for SECONDS and prints the latencies (ms) as JSON. A process of
its own, so the load generator's threads cannot delay its clock readings."""

import http.client
import json
import sys
import time


def main():
    port, path, interval, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]) / 1000, float(sys.argv[4])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    latencies, failures = [], 0
    deadline = time.monotonic() + seconds
    next_at = time.monotonic()
    while time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                latencies.append((time.perf_counter() - started) * 1000)
            else:
                failures += 1
        except OSError:
            failures += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    print(json.dumps({"latencies_ms": latencies, "failures": failures}))


if __name__ == "__main__":
    main()
