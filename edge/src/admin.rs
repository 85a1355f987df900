//! `/healthz`, `/readyz` and `/metrics`, answered on the public port before routing.

use http::StatusCode;
use serde_json::{json, Map, Value};

use crate::headers::LocalResponse;
use crate::metrics::EdgeMetrics;
use crate::state::Live;

pub const PATHS: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// The answer for an observability path, or `None` for any other path.
pub fn answer(path: &str, live: Option<&Live>, metrics: &EdgeMetrics) -> Option<(&'static str, LocalResponse)> {
    match path {
        "/healthz" => Some(("_healthz", LocalResponse::json(StatusCode::OK, br#"{"status":"alive"}"#.to_vec()))),
        "/readyz" => Some(("_readyz", readiness(live))),
        "/metrics" => Some((
            "_metrics",
            match metrics.render() {
                Ok(text) => LocalResponse {
                    status: StatusCode::OK,
                    content_type: Some("text/plain; version=0.0.4; charset=utf-8"),
                    headers: Vec::new(),
                    body: text.into(),
                },
                Err(e) => LocalResponse::problem(todo_common::Problem::internal(&e)),
            },
        )),
        _ => None,
    }
}

/// Ready when a policy is loaded and every upstream has at least one healthy address.
pub fn readiness(live: Option<&Live>) -> LocalResponse {
    let mut backends = Map::new();
    let mut ready = true;
    match live {
        None => {
            ready = false;
            backends.insert("policy".into(), json!({"status": "down", "detail": "no valid policy is loaded"}));
        }
        Some(live) => {
            backends.insert("policy".into(), json!({"status": "up", "generation": live.generation}));
            for (name, pool) in &live.pools {
                let (healthy, known) = pool.health();
                let state = if healthy > 0 {
                    json!({"status": "up", "healthy": healthy, "addresses": known})
                } else {
                    ready = false;
                    json!({"status": "down", "healthy": 0, "addresses": known,
                           "detail": "no healthy address"})
                };
                backends.insert(format!("upstream:{name}"), state);
            }
        }
    }
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "backends": Value::Object(backends),
    });
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    LocalResponse::json(status, serde_json::to_vec(&body).unwrap_or_default())
}
