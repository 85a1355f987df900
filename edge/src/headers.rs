//! The one place every response is finished, whether it came from an upstream
//! (`response_filter`) or was written by the edge (401, 404, 413, 429, preflight, health,
//! 502/503/504): security headers, CORS, request id, rate-limit headers, and no header
//! naming the server software. And the headers every upstream request carries
//! ([`for_upstream`]).

use std::sync::LazyLock;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;

use crate::client_ip::{ClientAddress, X_FORWARDED_FOR};
use crate::ctx::RequestCtx;
use todo_common::traces::{TRACEPARENT, TRACESTATE};

pub use crate::security_headers::SECURITY_HEADERS;

/// Every answer's headers start as a copy of this map: `SECURITY_HEADERS`, validated
/// once, with room for what follows. Copying it costs less than inserting the twelve.
static SECURITY_TEMPLATE: LazyLock<HeaderMap> = LazyLock::new(|| {
    let mut headers = HeaderMap::with_capacity(SECURITY_HEADERS.len() + ROOM);
    for (name, value) in SECURITY_HEADERS {
        headers.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    headers
});

/// Room in an answer's map beyond the security headers: the upstream's own headers, the
/// request id, CORS (3) and the rate limit (3).
const ROOM: usize = 24;

/// Headers that would tell the world what software answers.
const SOFTWARE_HEADERS: &[&str] = &["server", "x-powered-by", "x-aspnet-version", "via"];

pub const REQUEST_ID: &str = todo_common::request_id::HEADER;
static REQUEST_ID_NAME: HeaderName = HeaderName::from_static(REQUEST_ID);
static TRACEPARENT_NAME: HeaderName = HeaderName::from_static(TRACEPARENT);
static X_FORWARDED_FOR_NAME: HeaderName = HeaderName::from_static(X_FORWARDED_FOR);
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const FORWARDED: &str = "forwarded";
/// Room for what [`for_upstream`] adds: request id, trace, forwarded for and proto.
const FORWARDING_HEADERS: usize = 4;
static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Adds everything the edge promises to a response that came from an upstream.
///
/// The headers are written into the response's `http` map directly, and the response
/// loses the original-case twin map Pingora keeps beside it for parsed responses:
/// through `ResponseHeader::insert_header`, every added header was title-cased, copied,
/// parsed again and inserted into both maps, a fifth of the edge's instructions per
/// request (BENCHMARKS.md, issue 17). Header names go out in Pingora's canonical case.
pub fn finish(resp: &mut ResponseHeader, ctx: &RequestCtx) -> pingora::Result<()> {
    // `Parts` carry no reason phrase: an upstream's own one (rare) is put back afterwards.
    let reason = resp.get_reason_phrase().filter(|r| Some(*r) != resp.status.canonical_reason()).map(str::to_owned);
    let placeholder = ResponseHeader::from(http::Response::new(()).into_parts().0);
    let mut parts = http::response::Parts::from(std::mem::replace(resp, placeholder));
    let upstream = std::mem::replace(&mut parts.headers, SECURITY_TEMPLATE.clone());
    let headers = &mut parts.headers;
    // The upstream's headers join the security headers, except one of those (the edge's
    // value wins) or one that names the server software.
    let mut keeping: Option<HeaderName> = None;
    for (name, value) in upstream {
        // `name` is set on a name's first value, `None` on the ones after it.
        if let Some(name) = name {
            let wanted = !SOFTWARE_HEADERS.contains(&name.as_str()) && !headers.contains_key(&name);
            keeping = wanted.then_some(name);
        }
        if let Some(name) = &keeping {
            headers.append(name.clone(), value);
        }
    }
    add_promised(headers, ctx);
    *resp = ResponseHeader::from(parts);
    if reason.is_some() {
        resp.set_reason_phrase(reason.as_deref())?;
    }
    Ok(())
}

/// CORS, request id and rate-limit headers: with the security headers, what every
/// response carries, whoever wrote it.
fn add_promised(headers: &mut HeaderMap, ctx: &RequestCtx) {
    if !ctx.request_id.is_empty() {
        headers.insert(REQUEST_ID_NAME.clone(), ctx.request_id.clone());
    }
    if let Some(live) = ctx.live.as_deref() {
        if let Some(cors) = &live.cors {
            let expose = live.cors_expose_headers.as_ref();
            crate::cors::add_response_headers(headers, cors, expose, ctx.cors_origin.as_ref());
        }
    }
    if let Some(decision) = &ctx.limit {
        // `HeaderValue::from(integer)` formats straight into the value's buffer (no `String`).
        headers.insert(RATELIMIT_LIMIT.clone(), HeaderValue::from(decision.limit));
        headers.insert(RATELIMIT_REMAINING.clone(), HeaderValue::from(decision.remaining));
        headers.insert(RATELIMIT_RESET.clone(), HeaderValue::from(decision.reset_seconds));
    }
}

/// What an upstream request carries from the edge: the request id, the trace context
/// (the edge's span as the parent), no identity header a
/// client sent, and forwarding headers the edge rebuilt. The edge is where trust starts:
/// whatever forwarding headers the client sent are replaced.
pub fn for_upstream(req: &mut RequestHeader, ctx: &RequestCtx, over_tls: bool) -> pingora::Result<()> {
    // As in `finish`, straight into the `http` map, without Pingora's twin case map. The
    // request target is kept as the client sent it, should it differ from the URI's text.
    let raw = req.raw_path();
    let target = (raw != req.uri.path_and_query().map_or(&b""[..], |p| p.as_str().as_bytes())).then(|| raw.to_vec());
    let end_stream = req.send_end_stream();
    let placeholder = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts = http::request::Parts::from(std::mem::replace(req, placeholder));
    let headers = &mut parts.headers;
    headers.reserve(FORWARDING_HEADERS);
    headers.insert(REQUEST_ID_NAME.clone(), ctx.request_id.clone());
    headers.insert(TRACEPARENT_NAME.clone(), ctx.trace.traceparent());
    if !ctx.trace.continues_client_trace() {
        // A `tracestate` belongs to the `traceparent` it came with, which was not valid.
        headers.remove(TRACESTATE);
    }
    crate::auth::strip_identity_headers(headers);
    headers.remove(FORWARDED);
    match ctx.client.as_ref().and_then(ClientAddress::forwarded_for) {
        Some(chain) => {
            headers.insert(X_FORWARDED_FOR_NAME.clone(), chain);
        }
        None => {
            headers.remove(X_FORWARDED_FOR);
        }
    }
    let proto = if over_tls { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    *req = RequestHeader::from(parts);
    if let Some(target) = target {
        req.set_raw_path(&target)?;
    }
    if let Some(end_stream) = end_stream {
        req.set_send_end_stream(end_stream);
    }
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
pub fn local_header(response: &LocalResponse, ctx: &RequestCtx) -> ResponseHeader {
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = response.status;
    parts.headers = SECURITY_TEMPLATE.clone();
    let headers = &mut parts.headers;
    if let Some(content_type) = response.content_type {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    // 204 and 304 must not carry a length; everything else always does, so no client
    // ever waits for the connection to close to find the end of the body.
    if !matches!(response.status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED) {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(response.body.len()));
    }
    for (name, value) in &response.headers {
        headers.insert(name.clone(), value.clone());
    }
    add_promised(headers, ctx);
    ResponseHeader::from(parts)
}

/// Writes a local response (header, then body unless HEAD) through the one finishing helper.
pub async fn respond(session: &mut Session, ctx: &RequestCtx, response: LocalResponse) -> pingora::Result<()> {
    let head = session.req_header().method == http::Method::HEAD;
    let resp = local_header(&response, ctx);
    let no_body = head || response.body.is_empty();
    session.write_response_header(Box::new(resp), no_body).await?;
    if !no_body {
        session.write_response_body(Some(response.body), true).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upstream_request_keeps_its_target_and_gets_the_forwarding_headers() {
        let mut ctx = RequestCtx::new();
        ctx.request_id = HeaderValue::from_static("req-1");
        for target in [&b"/tasks?limit=5"[..], b"/tasks/a%2Fb?q=%ff", b"/t\xffsks"] {
            let mut req = RequestHeader::build("GET", target, None).unwrap();
            req.insert_header("X-Forwarded-For", "203.0.113.9").unwrap();
            req.insert_header("X-User-Id", "someone-else").unwrap();
            req.insert_header("Accept", "application/json").unwrap();
            let sent = req.raw_path().to_vec();
            for_upstream(&mut req, &ctx, true).unwrap();
            assert_eq!(req.raw_path(), &sent[..], "{}", String::from_utf8_lossy(target));
            assert_eq!(req.headers[REQUEST_ID], "req-1");
            assert_eq!(req.headers["x-forwarded-proto"], "https");
            assert_eq!(req.headers["accept"], "application/json");
            assert!(req.headers.contains_key(TRACEPARENT));
            assert!(!req.headers.contains_key(X_FORWARDED_FOR), "no client address: the client's chain is dropped");
            assert!(!req.headers.contains_key("x-user-id"), "identity headers never reach a service");
        }
    }

    #[test]
    fn an_upstream_reason_phrase_is_kept() {
        let ctx = RequestCtx::new();
        let mut resp = ResponseHeader::build(599, None).unwrap();
        resp.set_reason_phrase(Some("Network Connect Timeout")).unwrap();
        finish(&mut resp, &ctx).unwrap();
        assert_eq!(resp.get_reason_phrase(), Some("Network Connect Timeout"));
        let mut resp = ResponseHeader::build(200, None).unwrap();
        finish(&mut resp, &ctx).unwrap();
        assert_eq!(resp.get_reason_phrase(), Some("OK"));
    }

    #[test]
    fn an_upstream_answer_gets_the_promised_headers_and_loses_the_software_ones() {
        let mut ctx = RequestCtx::new();
        ctx.request_id = HeaderValue::from_static("req-2");
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("Server", "nginx/1.22").unwrap();
        resp.insert_header("Content-Type", "application/json").unwrap();
        resp.append_header("Set-Cookie", "a=1").unwrap();
        resp.append_header("Set-Cookie", "b=2").unwrap();
        resp.insert_header("X-Frame-Options", "ALLOWALL").unwrap();
        finish(&mut resp, &ctx).unwrap();
        let cookies: Vec<_> = resp.headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"], "every value of a repeated header is kept");
        assert_eq!(
            resp.headers.get_all("x-frame-options").iter().count(),
            1,
            "the edge's value replaces the upstream's"
        );
        assert_eq!(resp.status, 200);
        assert!(!resp.headers.contains_key("server"));
        assert_eq!(resp.headers["content-type"], "application/json");
        assert_eq!(resp.headers[REQUEST_ID], "req-2");
        for (name, value) in SECURITY_HEADERS {
            assert_eq!(resp.headers[*name], *value);
        }
    }
}
