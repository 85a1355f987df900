//! Readiness: each backend reports its state; only a critical one that is down makes
//! the process unready, so a cache or broker outage never takes every replica out.

use serde::Serialize;

#[cfg(feature = "server")]
pub use responses::{liveness_response, readiness_response};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum BackendState {
    Up,
    /// Working around an outage (e.g. reading from MongoDB while Redis is down).
    Degraded {
        detail: String,
    },
    Down {
        detail: String,
    },
}

#[derive(Debug, Clone)]
pub struct BackendReport {
    pub name: &'static str,
    /// A critical backend that is down makes the process unready.
    pub critical: bool,
    pub state: BackendState,
}

/// The services' `/readyz` and `/livez` answers.
#[cfg(feature = "server")]
mod responses {
    use bytes::Bytes;
    use http::{Response, StatusCode};
    use http_body_util::Full;
    use serde::Serialize;

    use super::{BackendReport, BackendState};

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct ReadinessBody<'a> {
        status: &'static str,
        backends: std::collections::BTreeMap<&'static str, &'a BackendState>,
        /// Development mode (public keys accepted), shown where an operator looks.
        dev_mode: bool,
    }

    pub fn readiness_response(reports: &[BackendReport], dev_mode: bool) -> Response<Full<Bytes>> {
        let unready = reports.iter().any(|r| r.critical && matches!(r.state, BackendState::Down { .. }));
        let degraded = reports.iter().any(|r| r.state != BackendState::Up);
        let body = ReadinessBody {
            status: if unready {
                "unavailable"
            } else if degraded {
                "degraded"
            } else {
                "ready"
            },
            backends: reports.iter().map(|r| (r.name, &r.state)).collect(),
            dev_mode,
        };
        let status = if unready { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
        crate::body::json_response(status, &body)
    }

    pub fn liveness_response() -> Response<Full<Bytes>> {
        crate::body::json_response(StatusCode::OK, &serde_json::json!({ "status": "alive" }))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn report(name: &'static str, critical: bool, state: BackendState) -> BackendReport {
            BackendReport { name, critical, state }
        }

        #[test]
        fn only_a_critical_backend_down_makes_unready() {
            let down = BackendState::Down { detail: "gone".into() };
            assert_eq!(readiness_response(&[report("redis", false, down.clone())], false).status(), 200);
            assert_eq!(readiness_response(&[report("mongodb", true, down)], false).status(), 503);
        }
    }
}
