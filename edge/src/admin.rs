//! `/healthz`, `/readyz` and `/metrics`, answered on the public port before routing.

use http::StatusCode;
use serde_json::{json, Map, Value};

use todo_common::auth::TokenVerifier;
use todo_common::health::BackendState;

use crate::headers::LocalResponse;
use crate::limits::shared::SharedStore;
use crate::metrics::EdgeMetrics;
use crate::state::Live;

pub const PATHS: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// The answer for an observability path, or `None` for any other path.
pub fn answer(
    path: &str,
    live: Option<&Live>,
    verifier: &TokenVerifier,
    limit_store: Option<&SharedStore>,
    metrics: &EdgeMetrics,
) -> Option<(&'static str, LocalResponse)> {
    match path {
        "/healthz" => Some(("_healthz", LocalResponse::json(StatusCode::OK, br#"{"status":"alive"}"#.to_vec()))),
        "/readyz" => Some(("_readyz", readiness(live, verifier, limit_store))),
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

/// Ready when a policy is loaded, every upstream has at least one healthy address, and
/// the token keys are loaded (a JWK Set that cannot be refreshed only degrades, as does
/// an unreachable rate-limit store: limits then count per replica).
pub fn readiness(live: Option<&Live>, verifier: &TokenVerifier, limit_store: Option<&SharedStore>) -> LocalResponse {
    let mut backends = Map::new();
    let mut ready = true;
    let mut degraded = false;
    if let Some(keys) = verifier.readiness() {
        ready &= !matches!(keys.state, BackendState::Down { .. });
        degraded |= matches!(keys.state, BackendState::Degraded { .. });
        backends.insert(keys.name.into(), serde_json::to_value(&keys.state).unwrap_or_default());
    }
    if let Some(store) = limit_store {
        let state = store.state();
        degraded |= state != BackendState::Up;
        backends.insert("ratelimit-store".into(), serde_json::to_value(&state).unwrap_or_default());
    }
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
    let status = match (ready, degraded) {
        (false, _) => "unavailable",
        (true, true) => "degraded",
        (true, false) => "ready",
    };
    let body = json!({
        "status": status,
        "backends": Value::Object(backends),
        "devMode": verifier.dev_mode(),
    });
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    LocalResponse::json(status, serde_json::to_vec(&body).unwrap_or_default())
}
