//! One JSON line per request, whoever answered it, on the path every request takes: built
//! by hand (`JsonLine`) rather than through `tracing`'s field visitors, which cost the
//! edge a few microseconds per request. `RUST_LOG` still decides (target `edge::access`).

use std::time::Duration;

use pingora::proxy::Session;
use pingora::Error;
use todo_common::telemetry::JsonLine;

use crate::ctx::RequestCtx;

const TARGET: &str = "edge::access";

pub fn record(session: &Session, ctx: &RequestCtx, status: u16, elapsed: Duration, error: Option<&Error>) {
    if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
        return;
    }
    let req = session.req_header();
    let mut line = JsonLine::new("INFO", TARGET, "request");
    line.str("request_id", &ctx.request_id)
        .str("method", req.method.as_str())
        // The path only: a query string may carry things that do not belong in logs.
        .str("path", req.uri.path())
        .str("route", ctx.route_label())
        .u64("status", status.into())
        .f64("duration_ms", elapsed.as_secs_f64() * 1000.0);
    if let Some(upstream) = ctx.upstream_name() {
        line.str("upstream", upstream);
    }
    if let Some(addr) = &ctx.upstream_addr {
        line.display("upstream_addr", addr);
    }
    if let Some(upstream_elapsed) = ctx.upstream_elapsed {
        line.f64("upstream_ms", upstream_elapsed.as_secs_f64() * 1000.0);
    }
    if let Some(ip) = ctx.client_ip {
        line.display("client_ip", ip);
    }
    if let Some(subject) = &ctx.subject {
        line.str("subject", subject);
    }
    if let Some(error) = error {
        line.display("error", error);
    }
    line.write();
}
