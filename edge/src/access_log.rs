//! One JSON line per request, whoever answered it, on the path every request takes: built
//! by hand (`JsonLine`) rather than through `tracing`'s field visitors, which cost the
//! edge a few microseconds per request. `RUST_LOG` still decides (target `edge::access`).

use std::time::Duration;

use pingora::protocols::l4::socket::SocketAddr;
use pingora::proxy::Session;
use pingora::Error;
use todo_common::telemetry::JsonLine;

use crate::ctx::RequestCtx;

const TARGET: &str = "edge::access";

pub fn record(session: &Session, ctx: &RequestCtx, status: u16, elapsed: Duration, error: Option<&Error>) {
    let req = session.req_header();
    // The path only: a query string may carry things that do not belong in logs.
    let request = Request { method: req.method.as_str(), path: req.uri.path(), protocol: protocol(req.version) };
    write(ctx, Some(request), status, elapsed, error);
}

struct Request<'a> {
    method: &'a str,
    path: &'a str,
    protocol: &'static str,
}

pub fn protocol(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_10 => "HTTP/1.0",
        _ => "other",
    }
}

/// A request answered before it could be parsed (no method or path to log).
pub fn record_refused(ctx: &RequestCtx, status: u16, elapsed: Duration) {
    write(ctx, None, status, elapsed, None);
}

fn write(ctx: &RequestCtx, request: Option<Request<'_>>, status: u16, elapsed: Duration, error: Option<&Error>) {
    if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
        return;
    }
    let mut line = JsonLine::new("INFO", TARGET, "request");
    line.field("request_id", ctx.request_id.to_str().unwrap_or_default());
    if ctx.trace.is_valid() {
        line.field("trace_id", ctx.trace.trace_id_hex()).field("span_id", ctx.trace.span_id_hex());
    }
    if let Some(request) = request {
        line.field("method", request.method).field("path", request.path).field("protocol", request.protocol);
    }
    line.field("route", ctx.route_label())
        .field("status", &status)
        .field("duration_ms", &(elapsed.as_secs_f64() * 1000.0));
    if let Some(upstream) = ctx.upstream_name() {
        line.field("upstream", upstream);
    }
    match &ctx.upstream_addr {
        Some(SocketAddr::Inet(addr)) => {
            line.ip("upstream_addr", addr.ip(), Some(addr.port()));
        }
        Some(addr) => {
            line.display("upstream_addr", addr);
        }
        None => {}
    }
    if let Some(upstream_elapsed) = ctx.upstream_elapsed {
        line.field("upstream_ms", &(upstream_elapsed.as_secs_f64() * 1000.0));
    }
    if let Some(client) = &ctx.client {
        line.ip("client_ip", client.ip, None);
    }
    if let Some(subject) = &ctx.subject {
        line.field("subject", subject.as_str());
    }
    if let Some(error) = error {
        line.display("error", error);
    }
    line.write();
}
