//! W3C Trace Context at the edge: a valid client trace is continued and an invalid one
//! replaced, the upstream's parent is the edge's own span, and the access log line carries
//! the request's `trace_id` and the edge's `span_id`.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// What the upstream received: its `traceparent` split into (trace id, parent span id,
/// flags), and its `tracestate`.
async fn upstream_trace(edge: &Edge, headers: &[(&str, &str)]) -> ((String, String, String), Option<String>) {
    let mut request = edge.client().get(edge.url("/tasks")).bearer_auth(token_for("tracer"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("edge answers");
    assert_eq!(response.status(), 200);
    let echoed: Value = response.json().await.expect("the stub's echo");
    let sent = echoed["headers"]["traceparent"].as_str().expect("a traceparent upstream").to_owned();
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!((parts.len(), parts[0]), (4, "00"), "{sent}");
    let tracestate = echoed["headers"]["tracestate"].as_str().map(str::to_owned);
    ((parts[1].to_owned(), parts[2].to_owned(), parts[3].to_owned()), tracestate)
}

#[tokio::test]
async fn the_trace_goes_upstream_under_the_edges_span_and_into_the_access_log() {
    let users = Stub::start("users").await;
    let tasks = Stub::start("tasks").await;
    let policy = PolicyDir::new();
    write_policy(&policy.path, &[users.addr], &[tasks.addr]);
    let log = policy.path.join("edge.log");
    let edge = Edge::start_logging(&policy.path, &[("RUST_LOG", "info")], &log).await;

    let valid = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let ((trace, parent, flags), state) =
        upstream_trace(&edge, &[("traceparent", &valid), ("tracestate", "vendor=abc"), ("x-request-id", "traced-1")])
            .await;
    assert_eq!(trace, CLIENT_TRACE, "the client's trace is continued");
    assert_ne!(parent, CLIENT_SPAN, "the upstream's parent is the edge's span");
    assert_eq!(flags, "01", "a sampled client trace stays sampled");
    assert_eq!(state.as_deref(), Some("vendor=abc"));

    let unsampled = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-00");
    let ((_, _, flags), _) = upstream_trace(&edge, &[("traceparent", &unsampled)]).await;
    assert_eq!(flags, "00", "an unsampled client trace stays unsampled");

    // Uppercase hex and a zero trace id are invalid: a new trace, without the stale state.
    for invalid in [
        format!("00-{}-{CLIENT_SPAN}-01", CLIENT_TRACE.to_uppercase()),
        format!("00-{}-{CLIENT_SPAN}-01", "0".repeat(32)),
    ] {
        let ((trace, _, _), state) =
            upstream_trace(&edge, &[("traceparent", &invalid), ("tracestate", "vendor=abc")]).await;
        assert!(trace != CLIENT_TRACE && trace != "0".repeat(32) && trace.len() == 32, "{invalid} -> {trace}");
        assert_eq!(state, None, "{invalid}: tracestate dropped with its traceparent");
    }
    let ((first, _, _), _) = upstream_trace(&edge, &[]).await;
    let ((second, _, _), _) = upstream_trace(&edge, &[]).await;
    assert_ne!(first, second, "every request without a trace starts its own");

    // Lines leave in batches at most 50 ms apart.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(edge);
    let log = std::fs::read_to_string(&log).expect("log written");
    let line = log.lines().find(|l| l.contains("\"request_id\":\"traced-1\"")).expect("the access log line");
    let line: Value = serde_json::from_str(line).expect("a JSON line");
    assert_eq!(line["trace_id"], CLIENT_TRACE, "{line}");
    assert_eq!(line["span_id"], parent.as_str(), "the span the upstream saw as its parent: {line}");
}
