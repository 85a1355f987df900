"""Turns a run's results into the printed table, a Markdown report and an SVG chart."""

import html

TARGETS = {
    "throughput": 0.5,  # at least, x nginx (issue 17)
    "cpu": 2.0,  # at most, x nginx (issue 17)
    "naive": 1.1,  # throughput at least, x the naive Pingora build (issue 17)
    "p99": 3.0,  # at most, x nginx
    "peak_mib": 32.0,  # at most
    "eddsa_cached": 0.95,  # EdDSA throughput at least, x HS256, both with the verified-token cache (issue 13)
}
# The edge's throughput over TLS at least, x nginx's, per load (issue 14).
TLS_TARGETS = {"keep-alive": 0.45, "handshakes": 0.5}
# (what, HS256 edge, EdDSA edge): the token-check comparisons, each pair in the same run.
TOKEN_PAIRS = [
    ("with the verified-token cache (one token)", "edge", "edge-eddsa"),
    ("without it (a distinct token per request)", "edge-nocache", "edge-eddsa-nocache"),
]


def share(value):
    return "?" if value is None else f"{value:.0%}"


def verdict_lines(checks):
    """Markdown bullets of (what, value, ok) checks."""
    return [f"- {'PASS' if ok else 'MISS'}: {what}: {value}" for what, value, ok in checks]


def proxy_rows(proxy):
    base = next(t for t in proxy["targets"] if t["name"] == "nginx")
    rows = []
    for t in proxy["targets"]:
        rows.append(
            {
                **t,
                "rps_ratio": t["rps"] / base["rps"],
                "p99_ratio": t["p99_ms"] / base["p99_ms"],
                "cpu_ratio": t["cpu_us_per_request"] / base["cpu_us_per_request"],
            }
        )
    return rows


def verdicts(proxy):
    rows = {r["name"]: r for r in proxy_rows(proxy)}
    edge = rows.get("edge")
    if edge is None:
        return []
    checks = [
        (f"throughput >= {TARGETS['throughput']}x nginx", f"{edge['rps_ratio']:.2f}x",
         edge["rps_ratio"] >= TARGETS["throughput"]),
        (f"CPU per request <= {TARGETS['cpu']}x nginx", f"{edge['cpu_ratio']:.2f}x", edge["cpu_ratio"] <= TARGETS["cpu"]),
        ("p99 latency <= 3x nginx", f"{edge['p99_ratio']:.2f}x", edge["p99_ratio"] <= TARGETS["p99"]),
        ("peak memory <= 32 MiB", f"{edge['peak_mib']:.1f} MiB", edge["peak_mib"] <= TARGETS["peak_mib"]),
    ]
    naive = rows.get("naive")
    if naive:
        ratio = edge["rps"] / naive["rps"]
        checks.append((f"throughput >= {TARGETS['naive']}x the naive Pingora build", f"{ratio:.2f}x",
                       ratio >= TARGETS["naive"]))
    return checks


def token_rows(proxy):
    """EdDSA against HS256 at the edge, for each pair that ran."""
    by_name = {t["name"]: t for t in proxy["targets"]}
    rows = []
    for what, hs256, eddsa in TOKEN_PAIRS:
        if hs256 in by_name and eddsa in by_name:
            h, e = by_name[hs256], by_name[eddsa]
            rows.append({
                "what": what, "hs256": h, "eddsa": e,
                "rps_ratio": e["rps"] / h["rps"],
                "p99_ratio": e["p99_ms"] / h["p99_ms"],
                "cpu_delta_us": e["cpu_us_per_request"] - h["cpu_us_per_request"],
            })
    return rows


def token_verdicts(proxy):
    out = []
    for row in token_rows(proxy):
        if row["hs256"]["name"] == "edge":
            out.append((f"EdDSA throughput >= {TARGETS['eddsa_cached']}x HS256 with the verified-token cache",
                        f"{row['rps_ratio']:.2f}x", row["rps_ratio"] >= TARGETS["eddsa_cached"]))
        else:
            out.append(("EdDSA throughput against HS256 without the cache (reported)", f"{row['rps_ratio']:.2f}x "
                        f"({row['cpu_delta_us']:+.1f} µs CPU per request)", True))
    return out


def service_verdicts(services):
    out = []
    login = services.get("login")
    if login:
        out.append(("login throughput >= 90% of the bcrypt hash rate", f"{login['login_vs_hash_rate']:.0%}",
                    login["login_vs_hash_rate"] >= 0.9))
        out.append(("/healthz under 10 ms while logins saturate (p99)", f"{login['healthz_p99_ms']:.2f} ms",
                    login["healthz_p99_ms"] < 10))
    cache = services.get("cache")
    if cache:
        out.append(("cached GET /tasks does no MongoDB query (misses + errors)",
                    f"{cache['cached_hits']:.0f} hits, {cache['cached_misses'] + cache['cached_errors']:.0f} other",
                    cache["cached_misses"] + cache["cached_errors"] == 0))
        out.append(("cached >= 3x uncached throughput", f"{cache['ratio']:.2f}x", cache["ratio"] >= 3))
    notify = services.get("notify")
    if notify:
        out.append((f"completion→notification p99 at {notify['target_rate']}/s (reported)",
                    f"{notify['p99_ms']:.0f} ms", True))
    return out


def tls_rows(tls):
    """Per load: each proxy's medians, with the edge's ratios to nginx."""
    rows = []
    for load in tls["loads"]:
        by_name = {t["name"]: t for t in load["targets"]}
        nginx, edge = by_name["nginx-tls"], by_name["edge-tls"]
        rows.append({"load": load["load"], "description": load["description"], "nginx": nginx, "edge": edge,
                     "rps_ratio": edge["rps"] / nginx["rps"] if nginx["rps"] else float("nan"),
                     "cpu_ratio": edge["cpu_us_per_request"] / nginx["cpu_us_per_request"]
                     if nginx["cpu_us_per_request"] else float("nan")})
    return rows



def tls_verdicts(tls):
    return [(f"TLS {r['load']} req/s ≥ {TLS_TARGETS[r['load']]:.2f}× nginx", f"{r['rps_ratio']:.2f}×",
             r["rps_ratio"] >= TLS_TARGETS[r["load"]]) for r in tls_rows(tls) if r["load"] in TLS_TARGETS]


def tls_markdown(tls):
    out = ["", "## TLS comparison", "",
           f"nginx (OpenSSL, `ssl http2`) and the edge (rustls, ALPN h2 and http/1.1) terminating TLS with the same "
           f"ECDSA P-256 certificate, each on core 0, in front of the same trivial upstream; the load on core 1 "
           f"(`-c{tls['connections']}`, {tls['seconds']} s); `GET {tls['path']}` with the full edge's token and Origin; "
           f"medians of {tls['rounds']} interleaved rounds.", "",
           "| load | nginx req/s | edge req/s | edge × nginx | nginx CPU µs/req | edge CPU µs/req | CPU × nginx |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for r in tls_rows(tls):
        n, e = r["nginx"], r["edge"]
        out.append(f"| {r['load']}: {r['description']} | {n['rps']:.0f} | {e['rps']:.0f} | {r['rps_ratio']:.2f} | "
                   f"{n['cpu_us_per_request']:.1f} | {e['cpu_us_per_request']:.1f} | {r['cpu_ratio']:.2f} |")
    out += ["", "Targets (issue 14):", "", *verdict_lines(tls_verdicts(tls))]
    out += ["", "Every round:", "", "| round | load | proxy | req/s | CPU µs/req | proxy core use | errors |",
            "|---:|---|---|---:|---:|---:|---:|"]
    for i in range(tls["rounds"]):
        for load in tls["loads"]:
            for t in load["targets"]:
                r = t["rounds"][i]
                out.append(f"| {i + 1} | {load['load']} | {t['name']} | {r['rps']:.0f} | {r['cpu_us_per_request']:.1f} | "
                           f"{r['proxy_core_share']:.0%} | {r['non_2xx'] + r['socket_errors']} |")
    return out


def text_table(results):
    lines = []
    tls = results.get("tls")
    if tls:
        lines.append(f"{'TLS load':12} {'nginx req/s':>12} {'edge req/s':>11} {'x nginx':>8} {'nginx us/req':>13} "
                     f"{'edge us/req':>12}")
        for r in tls_rows(tls):
            lines.append(f"{r['load']:12} {r['nginx']['rps']:12.0f} {r['edge']['rps']:11.0f} {r['rps_ratio']:8.2f} "
                         f"{r['nginx']['cpu_us_per_request']:13.1f} {r['edge']['cpu_us_per_request']:12.1f}")
        lines += [f"  {'PASS' if ok else 'MISS'}  {what}: {value}" for what, value, ok in tls_verdicts(tls)]
        lines.append("")
    proxy = results.get("proxy")
    if proxy:
        lines.append(
            f"{'configuration':19} {'req/s':>9} {'x nginx':>8} {'p50 ms':>8} {'p99 ms':>8} {'x nginx':>8} "
            f"{'CPU us/req':>10} {'x nginx':>8} {'core use':>9} {'peak MiB':>9}"
        )
        for r in proxy_rows(proxy):
            lines.append(
                f"{r['name']:19} {r['rps']:9.0f} {r['rps_ratio']:8.2f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
                f"{r['p99_ratio']:8.2f} {r['cpu_us_per_request']:10.1f} {r['cpu_ratio']:8.2f} "
                f"{r['proxy_core_share']:9.0%} {r['peak_mib']:9.1f}"
            )
        lines.append("")
    for what, value, ok in (verdicts(proxy) + token_verdicts(proxy)) if proxy else []:
        lines.append(f"  {'PASS' if ok else 'MISS'}  {what}: {value}")
    for what, value, ok in service_verdicts(results.get("services", {})):
        lines.append(f"  {'PASS' if ok else 'MISS'}  {what}: {value}")
    return "\n".join(lines)


def markdown(results, chart_name):
    m = results["machine"]
    out = [
        f"# Benchmark results ({'smoke run' if results['smoke'] else 'full run'})",
        "",
        f"- Run: {results['started']} UTC, `{results['command']}`, {results['elapsed_s']:.0f} s in all",
        f"- Machine: {m['nproc']} CPUs ({m['cpu']}), Linux {m['kernel']}; load average at start {m['load_at_start']}, "
        f"at end {results.get('load_at_end', '?')}",
    ]
    proxy = results.get("proxy")
    if proxy:
        out += [
            f"- Proxies pinned to core 0; wrk (`-t1 -c{proxy['connections']} -d{proxy['seconds']}s --latency`) and the "
            f"trivial upstream (nginx, {proxy['body_bytes']}-byte JSON) on core 1; `GET {proxy['path']}` with a valid "
            f"bearer token (HS256, unless the configuration says EdDSA; the *-nocache ones send a distinct token per "
            f"request) and an allowlisted Origin; medians of {proxy['rounds']} interleaved rounds.",
            "",
            "## Proxy comparison",
            "",
            "| configuration | req/s | × nginx | p50 ms | p99 ms | p99 × nginx | CPU µs/req | CPU × nginx | proxy core use | peak RSS MiB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in proxy_rows(proxy):
            out.append(
                f"| {r['name']} | {r['rps']:.0f} | {r['rps_ratio']:.2f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                f"{r['p99_ratio']:.2f} | {r['cpu_us_per_request']:.1f} | {r['cpu_ratio']:.2f} | "
                f"{r['proxy_core_share']:.0%} | {r['peak_mib']:.1f} |"
            )
        out += ["", f"![throughput and p99 per configuration]({chart_name})", "", "Configurations:", ""]
        out += [f"- **{r['name']}**: {r['description']}" for r in proxy["targets"]]
        out += ["", "Targets (issues 7 and 17), the edge with its full policy:", "", *verdict_lines(verdicts(proxy))]
        out += ["", "Every round:", "", "| round | configuration | req/s | p50 ms | p99 ms | CPU µs/req | user µs/req | kernel µs/req | proxy core use | core 0 busy | core 1 busy | errors |",
                "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for i in range(proxy["rounds"]):
            for t in proxy["targets"]:
                r = t["rounds"][i]
                out.append(
                    f"| {i + 1} | {t['name']} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                    f"{r['cpu_us_per_request']:.1f} | {r.get('user_us_per_request', float('nan')):.1f} | "
                    f"{r.get('system_us_per_request', float('nan')):.1f} | {r['proxy_core_share']:.0%} | "
                    f"{r['core0_busy']:.0%} | {r['core1_busy']:.0%} | {r['non_2xx'] + r['socket_errors']} |"
                )
        rows = token_rows(proxy)
        if rows:
            out += ["", "### Token check: EdDSA against HS256", "",
                    "The same edge and policy; HS256 tokens checked with `JWT_SECRET`, EdDSA (Ed25519) tokens against "
                    "a JWK Set fetched from a static HTTP server (`JWT_JWKS_URL`). Without the cache, every request "
                    f"carries the next of {proxy.get('token_pool', 8192)} tokens, more than the edge's verified-token "
                    "cache keeps.", "",
                    "| token check | HS256 req/s | EdDSA req/s | EdDSA × HS256 | HS256 p99 ms | EdDSA p99 ms | "
                    "HS256 CPU µs/req | EdDSA CPU µs/req | EdDSA − HS256 CPU µs/req |",
                    "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for r in rows:
                h, e = r["hs256"], r["eddsa"]
                out.append(f"| {r['what']} | {h['rps']:.0f} | {e['rps']:.0f} | {r['rps_ratio']:.2f} | "
                           f"{h['p99_ms']:.2f} | {e['p99_ms']:.2f} | {h['cpu_us_per_request']:.1f} | "
                           f"{e['cpu_us_per_request']:.1f} | {r['cpu_delta_us']:+.1f} |")
            out += ["", "Targets (issue 13):", "", *verdict_lines(token_verdicts(proxy))]
    if results.get("tls"):
        out += tls_markdown(results["tls"])
    services = results.get("services", {})
    if services:
        out += ["", "## Service scenarios", "", "Services in release mode on both cores (not pinned), against the "
                "local MongoDB surrogate, Redis and RabbitMQ.", ""]
    login = services.get("login")
    if login:
        out += [
            "### Login against the bcrypt hash rate",
            "",
            "| bcrypt cost | hash rate (all cores) | login rate | login / hash rate | logins | /healthz p50 | /healthz p99 | /healthz max |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {login['bcrypt_cost']} | {login['hash_rate']:.2f}/s ({login['cores']} threads) | {login['login_rate']:.2f}/s | "
            f"{login['login_vs_hash_rate']:.0%} | {login['logins']} | {login['healthz_p50_ms']:.2f} ms | "
            f"{login['healthz_p99_ms']:.2f} ms | {login['healthz_max_ms']:.2f} ms |",
            "",
            f"Hash rate measured just before ({login['hash_rate_before']:.2f}/s) and after ({login['hash_rate_after']:.2f}/s) "
            f"the logins, averaged. /healthz was sampled every 20 ms ({login['healthz_samples']} samples, {login['healthz_failures']} failures) "
            "while the login clients kept every hashing permit busy.",
            "",
        ]
    cache = services.get("cache")
    if cache:
        u = cache["uncached_cache_results"]
        out += [
            "### Cached against uncached task lists",
            "",
            "| GET /tasks | req/s | p99 ms |",
            "|---|---:|---:|",
            f"| cached (Redis) | {cache['cached_rps']:.0f} | {cache['cached_p99_ms']:.2f} |",
            f"| uncached (every lookup a miss, read from MongoDB) | {cache['uncached_rps']:.0f} | {cache['uncached_p99_ms']:.2f} |",
            f"| Redis unreachable (outage mode; p50 {cache['redis_down_p50_ms']:.1f} ms) | {cache['redis_down_rps']:.0f} | "
            f"{cache['redis_down_p99_ms']:.2f} |",
            "",
            f"Cached / uncached: **{cache['ratio']:.2f}×** (a list of {cache['list_size']} tasks, wrk -c{cache['connections']}, "
            f"{cache['seconds']} s × {cache['rounds']} interleaved rounds, same database). svc-tasks `cache_requests_total` on "
            f"the cached instance during its runs: {cache['cached_hits']:.0f} hits, {cache['cached_misses']:.0f} misses, "
            f"{cache['cached_errors']:.0f} errors for {cache['cached_requests']} answered requests: every read was a hit, "
            f"so none queried MongoDB. The uncached instance: {u['hit']:.0f} hits, {u['miss']:.0f} misses, {u['error']:.0f} errors "
            f"(its Redis refuses every write, so nothing is ever cached); the Redis-down instance: "
            f"{cache['redis_down_cache_results']['error']:.0f} errors. "
            f"The MongoDB process was busy {share(cache.get('mongodb_cpu_share_cached'))} of a core during the cached runs "
            f"and {share(cache.get('mongodb_cpu_share_uncached'))} during the uncached ones.",
            "",
        ]
    notify = services.get("notify")
    if notify:
        out += [
            "### Completion to notification",
            "",
            "| target rate | achieved | completions | notifications stored | p50 | p99 | max | POST complete p50 / p99 |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {notify['target_rate']}/s | {notify['achieved_rate']:.1f}/s | {notify['completions']} | "
            f"{notify['stored_rate']:.1f}/s | "
            f"{notify['p50_ms']:.1f} ms | {notify['p99_ms']:.1f} ms | {notify['max_ms']:.1f} ms | "
            f"{notify['complete_request_p50_ms']:.1f} / {notify['complete_request_p99_ms']:.1f} ms |",
            "",
            "Latency: from sending `POST /tasks/{id}/complete` to svc-notify's `events_consumed_total` counting the "
            "matching notification as stored (the counter is polled every ~2 ms; the k-th new count is matched with "
            f"the k-th completion). Every completed task got exactly one `task.completed` notification: "
            f"{'yes' if notify['exactly_once'] else 'NO'}. The MongoDB process was busy "
            f"{share(notify.get('mongodb_cpu_share'))} of a core while the completions were sent.",
            "",
        ]
    sv = service_verdicts(services)
    if sv:
        out += ["Targets (issue 7), services:", "", *verdict_lines(sv)]
    return "\n".join(out) + "\n"


def svg_chart(proxy):
    """Two bar panels: throughput and p99 latency per configuration."""
    rows = proxy_rows(proxy)
    width, bar_h, gap, label_w, panel_w = 900, 22, 8, 130, 230
    top = 48
    height = top + len(rows) * (bar_h + gap) + 40
    colors = {"nginx": "#4c78a8"}
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    panels = [
        ("throughput (req/s, higher is better)", "rps", lambda r: f"{r['rps']:.0f} ({r['rps_ratio']:.2f}×)", label_w + 10),
        ("p99 latency (ms, lower is better)", "p99_ms", lambda r: f"{r['p99_ms']:.2f} ({r['p99_ratio']:.2f}×)",
         label_w + panel_w + 170),
    ]
    for title, key, text, x0 in panels:
        top_value = max(r[key] for r in rows) or 1
        out.append(f'<text x="{x0}" y="24" font-weight="bold">{html.escape(title)}</text>')
        for i, r in enumerate(rows):
            y = top + i * (bar_h + gap)
            w = max(1, r[key] / top_value * panel_w)
            color = colors.get(r["name"], "#f58518")
            out.append(f'<rect x="{x0}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}"/>')
            out.append(f'<text x="{x0 + w + 4:.1f}" y="{y + bar_h - 6}">{html.escape(text(r))}</text>')
    for i, r in enumerate(rows):
        y = top + i * (bar_h + gap)
        out.append(f'<text x="{label_w}" y="{y + bar_h - 6}" text-anchor="end">{html.escape(r["name"])}</text>')
    out.append(
        f'<text x="10" y="{height - 12}" fill="#555">medians of {proxy["rounds"]} interleaved rounds, '
        f'wrk -t1 -c{proxy["connections"]} -d{proxy["seconds"]}s, proxy pinned to one core; ratios against nginx</text>'
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"
