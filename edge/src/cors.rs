//! CORS from the policy's allowlist: preflights are answered here, before any token
//! check (they carry no credentials), and every response to an allowlisted origin — 401
//! and 429 included — names that exact origin, so browsers show the real error.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderValue, Method};
use pingora::http::{RequestHeader, ResponseHeader};

use crate::policy::CorsSpec;

/// The request's origin when the policy allowlists it.
pub fn allowed_origin(cors: Option<&CorsSpec>, req: &RequestHeader) -> Option<HeaderValue> {
    let cors = cors?;
    let value = req.headers.get(ORIGIN)?;
    cors.allows_origin(value.to_str().ok()?).then(|| value.clone())
}

pub fn is_preflight(req: &RequestHeader) -> bool {
    req.method == Method::OPTIONS
        && req.headers.contains_key(ORIGIN)
        && req.headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

/// Adds the preflight answer when the requested method and headers are allowed; without
/// it the browser refuses the actual request.
pub fn add_preflight_headers(resp: &mut ResponseHeader, cors: &CorsSpec, req: &RequestHeader) -> pingora::Result<()> {
    let method_ok = req
        .headers
        .get(ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|m| m.to_str().ok())
        .is_some_and(|m| cors.allowed_methods.iter().any(|a| a.eq_ignore_ascii_case(m.trim())));
    let headers_ok = req
        .headers
        .get(ACCESS_CONTROL_REQUEST_HEADERS)
        .map(|h| h.to_str().ok().is_some_and(|list| requested_headers_allowed(cors, list)))
        .unwrap_or(true);
    if method_ok && headers_ok {
        resp.insert_header(ACCESS_CONTROL_ALLOW_METHODS, cors.allowed_methods.join(", "))?;
        if !cors.allowed_headers.is_empty() {
            resp.insert_header(ACCESS_CONTROL_ALLOW_HEADERS, cors.allowed_headers.join(", "))?;
        }
        resp.insert_header(ACCESS_CONTROL_MAX_AGE, cors.max_age_seconds.to_string())?;
    }
    Ok(())
}

fn requested_headers_allowed(cors: &CorsSpec, list: &str) -> bool {
    list.split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .all(|h| cors.allowed_headers.iter().any(|a| a.eq_ignore_ascii_case(h)))
}

/// `Vary: Origin` whenever CORS is configured (the answer depends on it), and the
/// allow headers for an allowlisted origin. `expose` is `cors.expose_headers` joined
/// in advance, when it makes a valid value.
pub fn add_response_headers(
    headers: &mut HeaderMap,
    cors: &CorsSpec,
    expose: Option<&HeaderValue>,
    origin: Option<&HeaderValue>,
) {
    if headers.contains_key(VARY) {
        let vary = headers.get_all(VARY).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(", ");
        let has_origin = vary.split(',').any(|v| v.trim().eq_ignore_ascii_case("origin") || v.trim() == "*");
        if !has_origin {
            let value = if vary.trim().is_empty() { "Origin".to_owned() } else { format!("{vary}, Origin") };
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(VARY, value);
            }
        }
    } else {
        // The usual case, without building a string.
        headers.insert(VARY, HeaderValue::from_static("Origin"));
    }
    let Some(origin) = origin else {
        for name in [ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_EXPOSE_HEADERS] {
            headers.remove(&name);
        }
        return;
    };
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    if cors.allow_credentials {
        headers.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    }
    if !cors.expose_headers.is_empty() {
        let joined = || HeaderValue::from_str(&cors.expose_headers.join(", ")).ok();
        if let Some(value) = expose.cloned().or_else(joined) {
            headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, value);
        }
    }
}
