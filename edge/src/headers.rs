//! The one place every response is finished, whether it came from an upstream
//! (`response_filter`) or was written by the edge (401, 404, 413, 429, preflight, health,
//! 502/503/504): security headers, CORS, request id, rate-limit headers, and no header
//! naming the server software. And the headers every upstream request carries
//! ([`for_upstream`]).

use std::sync::LazyLock;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, StatusCode};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;

use crate::client_ip::{ClientAddress, X_FORWARDED_FOR};
use crate::ctx::RequestCtx;
use crate::limits::Decision;
use todo_common::traces::{TRACEPARENT, TRACESTATE};

/// The set Express's helmet sends by default.
pub const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'self';base-uri 'self';font-src 'self' https: data:;form-action 'self';\
         frame-ancestors 'self';img-src 'self' data:;object-src 'none';script-src 'self';\
         script-src-attr 'none';style-src 'self' https: 'unsafe-inline';upgrade-insecure-requests",
    ),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    ("origin-agent-cluster", "?1"),
    ("referrer-policy", "no-referrer"),
    ("strict-transport-security", "max-age=31536000; includeSubDomains"),
    ("x-content-type-options", "nosniff"),
    ("x-dns-prefetch-control", "off"),
    ("x-download-options", "noopen"),
    ("x-frame-options", "SAMEORIGIN"),
    ("x-permitted-cross-domain-policies", "none"),
    ("x-xss-protection", "0"),
];

/// `SECURITY_HEADERS` with names and values validated once: inserting clones of static
/// ones neither copies nor re-parses the bytes on every response.
static SECURITY_HEADER_VALUES: LazyLock<Vec<(HeaderName, HeaderValue)>> = LazyLock::new(|| {
    SECURITY_HEADERS
        .iter()
        .map(|(name, value)| (HeaderName::from_static(name), HeaderValue::from_static(value)))
        .collect()
});

/// Headers that would tell the world what software answers.
const SOFTWARE_HEADERS: &[&str] = &["server", "x-powered-by", "x-aspnet-version", "via"];

pub const REQUEST_ID: &str = todo_common::request_id::HEADER;

/// Adds everything the edge promises on a response.
pub fn finish(resp: &mut ResponseHeader, ctx: &RequestCtx) -> pingora::Result<()> {
    // One pass over the (few) headers present instead of a lookup per name; the removals
    // themselves are rare (an upstream's `Server`).
    if resp.headers.keys().any(|name| SOFTWARE_HEADERS.contains(&name.as_str())) {
        for name in SOFTWARE_HEADERS {
            resp.remove_header(*name);
        }
    }
    for (name, value) in SECURITY_HEADER_VALUES.iter() {
        resp.insert_header(name.clone(), value.clone())?;
    }
    if !ctx.request_id.is_empty() {
        resp.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
    }
    if let Some(live) = ctx.live.as_deref() {
        if let Some(cors) = &live.cors {
            let expose = live.cors_expose_headers.as_ref();
            crate::cors::add_response_headers(resp, cors, expose, ctx.cors_origin.as_ref())?;
        }
    }
    if let Some(decision) = &ctx.limit {
        add_rate_limit_headers(resp, decision)?;
    }
    Ok(())
}

fn add_rate_limit_headers(resp: &mut ResponseHeader, decision: &Decision) -> pingora::Result<()> {
    // `HeaderValue::from(integer)` formats straight into the value's buffer (no `String`).
    resp.insert_header("ratelimit-limit", HeaderValue::from(decision.limit))?;
    resp.insert_header("ratelimit-remaining", HeaderValue::from(decision.remaining))?;
    resp.insert_header("ratelimit-reset", HeaderValue::from(decision.reset_seconds))?;
    Ok(())
}

/// What an upstream request carries from the edge: the request id, the trace context
/// (the edge's span as the parent), no identity header a
/// client sent, and forwarding headers the edge rebuilt. The edge is where trust starts:
/// whatever forwarding headers the client sent are replaced.
pub fn for_upstream(req: &mut RequestHeader, ctx: &RequestCtx, over_tls: bool) -> pingora::Result<()> {
    req.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
    req.insert_header(TRACEPARENT, ctx.trace.traceparent())?;
    if !ctx.trace.continues_client_trace() && req.headers.contains_key(TRACESTATE) {
        // A `tracestate` belongs to the `traceparent` it came with, which was not valid.
        req.remove_header(TRACESTATE);
    }
    crate::auth::strip_identity_headers(req);
    req.remove_header("forwarded");
    match ctx.client.as_ref().and_then(ClientAddress::forwarded_for) {
        Some(chain) => req.insert_header(X_FORWARDED_FOR, chain)?,
        None => {
            req.remove_header(X_FORWARDED_FOR);
        }
    }
    let proto = if over_tls { "https" } else { "http" };
    req.insert_header("x-forwarded-proto", HeaderValue::from_static(proto))?;
    Ok(())
}

/// A response the edge writes itself.
pub struct LocalResponse {
    pub status: StatusCode,
    pub content_type: Option<&'static str>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl LocalResponse {
    pub fn empty(status: StatusCode) -> Self {
        Self { status, content_type: None, headers: Vec::new(), body: Bytes::new() }
    }

    pub fn json(status: StatusCode, body: Vec<u8>) -> Self {
        Self { status, content_type: Some("application/json"), headers: Vec::new(), body: Bytes::from(body) }
    }

    pub fn problem(problem: todo_common::Problem) -> Self {
        Self {
            status: problem.status(),
            content_type: Some(todo_common::problem::CONTENT_TYPE),
            body: problem.to_body(),
            headers: problem.headers,
        }
    }
}

/// Builds the finished header of a local response.
pub fn local_header(response: &LocalResponse, ctx: &RequestCtx) -> pingora::Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(response.status, Some(response.headers.len() + 24))?;
    if let Some(content_type) = response.content_type {
        resp.insert_header(CONTENT_TYPE, content_type)?;
    }
    // 204 and 304 must not carry a length; everything else always does, so no client
    // ever waits for the connection to close to find the end of the body.
    if !matches!(response.status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED) {
        resp.insert_header(CONTENT_LENGTH, HeaderValue::from(response.body.len()))?;
    }
    for (name, value) in &response.headers {
        resp.insert_header(name.clone(), value.clone())?;
    }
    finish(&mut resp, ctx)?;
    Ok(resp)
}

/// Writes a local response (header, then body unless HEAD) through the one finishing helper.
pub async fn respond(session: &mut Session, ctx: &RequestCtx, response: LocalResponse) -> pingora::Result<()> {
    let head = session.req_header().method == http::Method::HEAD;
    let resp = local_header(&response, ctx)?;
    let no_body = head || response.body.is_empty();
    session.write_response_header(Box::new(resp), no_body).await?;
    if !no_body {
        session.write_response_body(Some(response.body), true).await?;
    }
    Ok(())
}
