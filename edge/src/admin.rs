//! The admin listener (`EDGE_ADMIN_ADDR`, plain HTTP, kept off the public network):
//! `/metrics`, `/readyz` and `/healthz`. They show route counts, refusal reasons, upstream
//! names and health, so the public listener answers only `/healthz` ([`alive`]); there
//! `/metrics` and `/readyz` are unrouted paths like any other.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Map, Value};
use todo_common::auth::TokenVerifier;
use todo_common::health::BackendState;
use todo_common::Problem;

use crate::active_policy::ActivePolicy;
use crate::headers::LocalResponse;
use crate::limits::shared::SharedStore;
use crate::metrics::EdgeMetrics;

/// `/healthz`: the process answers (liveness); on both listeners.
pub fn alive() -> LocalResponse {
    LocalResponse::json(StatusCode::OK, br#"{"status":"alive"}"#.to_vec())
}

/// What the admin listener reads: the same state the proxy serves from.
pub struct AdminApp {
    pub live: Arc<ArcSwapOption<ActivePolicy>>,
    pub verifier: Arc<TokenVerifier>,
    pub limit_store: Option<Arc<SharedStore>>,
    pub metrics: Arc<EdgeMetrics>,
}

impl AdminApp {
    fn answer(&self, method: &Method, path: &str) -> LocalResponse {
        if method != Method::GET {
            let mut refusal = LocalResponse::problem(Problem::method_not_allowed("GET"));
            refusal.headers.push((ALLOW, HeaderValue::from_static("GET")));
            return refusal;
        }
        match path {
            "/healthz" => alive(),
            "/readyz" => readiness(self.live.load().as_deref(), &self.verifier, self.limit_store.as_deref()),
            "/metrics" => match self.metrics.render() {
                Ok(text) => LocalResponse {
                    status: StatusCode::OK,
                    content_type: Some("text/plain; version=0.0.4; charset=utf-8"),
                    headers: Vec::new(),
                    body: text.into(),
                },
                Err(e) => LocalResponse::problem(Problem::internal(&e)),
            },
            _ => LocalResponse::problem(Problem::not_found(format!(
                "{path} is not an admin path; this listener serves /metrics, /readyz and /healthz"
            ))),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let req = session.req_header();
        let answer = self.answer(&req.method, req.uri.path());
        if req.method != Method::GET {
            // Whatever body came with it is not read: end the connection after answering.
            session.set_keepalive(None);
        }
        let mut response = http::Response::new(answer.body.to_vec());
        *response.status_mut() = answer.status;
        let headers = response.headers_mut();
        if let Some(content_type) = answer.content_type {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        }
        headers.insert(CONTENT_LENGTH, HeaderValue::from(answer.body.len()));
        headers.extend(answer.headers);
        response
    }
}

/// Ready when a policy is loaded, every upstream has at least one healthy address, and
/// the token keys are loaded (a JWK Set that cannot be refreshed only degrades, as does
/// an unreachable rate-limit store: limits then count per replica).
pub fn readiness(
    live: Option<&ActivePolicy>,
    verifier: &TokenVerifier,
    limit_store: Option<&SharedStore>,
) -> LocalResponse {
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
