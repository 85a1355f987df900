//! The problem+json answers the edge gives itself, and how a proxying error becomes a
//! status: upstream refused or broke the connection 502, no healthy address 503, upstream
//! too slow 504.

use http::header::ALLOW;
use http::{HeaderValue, Method, StatusCode};
use pingora::{Error, ErrorSource, ErrorType};
use todo_common::Problem;

fn problem(status: StatusCode, kind: &'static str, title: &'static str, detail: String) -> Problem {
    Problem { kind, title, status: status.as_u16(), detail, errors: Vec::new(), headers: Vec::new() }
}

pub fn no_route(method: &Method, path: &str) -> Problem {
    Problem::not_found(format!("no route for {method} {}", truncate(path)))
}

pub fn method_not_allowed(allowed: &[Method]) -> Problem {
    let list = allowed.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
    let mut p = problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "/problems/method-not-allowed",
        "Method not allowed",
        format!("allowed: {list}"),
    );
    if let Ok(value) = HeaderValue::from_str(&list) {
        p.headers.push((ALLOW, value));
    }
    p
}

/// Pingora refuses `CONNECT` (tunnelling) before any phase runs; the edge says why.
pub fn connect_not_supported() -> Problem {
    problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "/problems/method-not-allowed",
        "Method not allowed",
        "CONNECT (tunnelling) is not supported".to_owned(),
    )
}

pub fn ambiguous_path() -> Problem {
    Problem::bad_request("the path has empty, '.' or '..' segments")
}

pub fn too_many_requests(retry_after: u64) -> Problem {
    Problem::too_many_requests(format!("the rate limit is used up; retry in {retry_after} s"), retry_after)
}

pub fn no_policy() -> Problem {
    Problem::service_unavailable("no valid routing policy is loaded")
}

pub fn no_healthy_address(upstream: &str) -> Problem {
    Problem::service_unavailable(format!("upstream {upstream} has no healthy address"))
}

/// The problem for a failed proxying, by the status `status_for` chose.
pub fn for_status(status: u16, upstream: Option<&str>, max_body_bytes: usize) -> Problem {
    let upstream = upstream.unwrap_or("the upstream");
    match status {
        400 => Problem::bad_request("the request could not be read"),
        408 => Problem::request_timeout(),
        413 => Problem::payload_too_large(max_body_bytes),
        502 => problem(
            StatusCode::BAD_GATEWAY,
            "/problems/bad-gateway",
            "Bad gateway",
            format!("{upstream} could not be reached or broke the connection"),
        ),
        503 => no_healthy_address(upstream),
        504 => problem(
            StatusCode::GATEWAY_TIMEOUT,
            "/problems/gateway-timeout",
            "Gateway timeout",
            format!("{upstream} did not answer in time"),
        ),
        _ => Problem::internal(&format!("proxy failure with status {status}")),
    }
}

/// The status for a proxying error; 0 when the client is gone and nothing can be sent.
pub fn status_for(e: &Error) -> u16 {
    use ErrorType::*;
    match e.etype() {
        HTTPStatus(code) => *code,
        ConnectTimedout => 504,
        ReadTimedout | WriteTimedout if *e.esource() == ErrorSource::Upstream => 504,
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                WriteError | ReadError | ConnectionClosed | WriteTimedout => 0,
                ReadTimedout => 408,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => match e.etype() {
                ConnectRefused | ConnectNoRoute | ConnectError | ConnectProxyFailure | SocketError => 502,
                _ => 500,
            },
        },
    }
}

fn truncate(path: &str) -> &str {
    match path.char_indices().nth(200) {
        Some((i, _)) => &path[..i],
        None => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::RETRY_AFTER;

    #[test]
    fn upstream_failures_map_to_gateway_statuses() {
        assert_eq!(status_for(&Error::new_up(ErrorType::ConnectRefused)), 502);
        assert_eq!(status_for(&Error::new_up(ErrorType::ReadTimedout)), 504);
        assert_eq!(status_for(&Error::new(ErrorType::HTTPStatus(503))), 503);
        assert_eq!(status_for(&Error::new_down(ErrorType::ReadError)), 0);
        assert_eq!(status_for(&Error::new_down(ErrorType::ReadTimedout)), 408);
    }

    #[test]
    fn too_many_requests_carries_retry_after() {
        let p = too_many_requests(0);
        assert_eq!(p.status, 429);
        assert!(p.headers.iter().any(|(n, v)| n == RETRY_AFTER && v == "1"));
    }
}
