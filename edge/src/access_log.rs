//! One JSON line per request (through `tracing`), whoever answered it.

use std::time::Duration;

use pingora::proxy::Session;
use pingora::Error;

use crate::ctx::RequestCtx;

pub fn record(session: &Session, ctx: &RequestCtx, status: u16, elapsed: Duration, error: Option<&Error>) {
    let req = session.req_header();
    let upstream_ms = ctx.upstream_elapsed.map(|d| d.as_secs_f64() * 1000.0);
    tracing::info!(
        target: "edge::access",
        request_id = %ctx.request_id,
        method = %req.method,
        // The path only: a query string may carry things that do not belong in logs.
        path = %req.uri.path(),
        route = ctx.route_label(),
        status,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        upstream = ctx.upstream_name(),
        upstream_addr = ctx.upstream_addr.as_ref().map(tracing::field::display),
        upstream_ms,
        client_ip = ctx.client_ip.map(tracing::field::display),
        subject = ctx.subject.as_deref(),
        error = error.map(|e| e.to_string()),
        "request"
    );
}
