//! Per-request state, created by `new_ctx` and carried through every phase.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderValue;
use pingora::protocols::l4::socket::SocketAddr;
use todo_common::auth::Subject;

use crate::active_policy::{ActivePolicy, Route};
use crate::client_ip::ClientAddress;
use crate::limits::Decision;
use crate::trace::RequestTrace;

pub struct RequestCtx {
    pub started: Instant,
    /// The request's duration when its answer went out before it ended (a refused body
    /// read and dropped after the 413): what the logs and metrics report.
    pub answered_after: Option<Duration>,
    /// Kept from the client when sane, generated otherwise; as a header value, checked
    /// once and cloned onto the upstream request and the answer.
    pub request_id: HeaderValue,
    /// The trace the request is part of (`trace`); none before the headers are read.
    pub trace: RequestTrace,
    /// The client, behind trusted proxies or not (`client_ip`).
    pub client: Option<ClientAddress>,
    /// The policy this request sees from start to end, even if a reload happens meanwhile.
    pub live: Option<Arc<ActivePolicy>>,
    pub route: Option<Arc<Route>>,
    /// Metric label for requests without a route: `_healthz`, `_unmatched`, ...
    pub label: &'static str,
    /// The request's `Origin` when allowlisted: echoed in `Access-Control-Allow-Origin`.
    pub cors_origin: Option<HeaderValue>,
    pub subject: Option<Subject>,
    pub limit: Option<Decision>,
    /// Addresses this request failed to connect to, so a retry picks another one.
    pub tried: Vec<SocketAddr>,
    pub upstream_started: Option<Instant>,
    pub upstream_elapsed: Option<Duration>,
    pub upstream_addr: Option<SocketAddr>,
    pub body_bytes: usize,
}

impl RequestCtx {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            answered_after: None,
            request_id: HeaderValue::from_static(""),
            trace: RequestTrace::default(),
            client: None,
            live: None,
            route: None,
            label: "_unmatched",
            cors_origin: None,
            subject: None,
            limit: None,
            tried: Vec::new(),
            upstream_started: None,
            upstream_elapsed: None,
            upstream_addr: None,
            body_bytes: 0,
        }
    }

    /// Keeps `id` (from `request_id::keep_or_make`: visible ASCII, a valid header value).
    pub fn set_request_id(&mut self, id: String) {
        self.request_id = HeaderValue::try_from(id).unwrap_or_else(|_| HeaderValue::from_static(""));
    }

    /// The route name, or the label of whatever answered instead.
    pub fn route_label(&self) -> &str {
        self.route.as_ref().map_or(self.label, |r| r.spec.name.as_str())
    }

    pub fn upstream_name(&self) -> Option<&str> {
        self.route.as_ref().map(|r| r.pool.name())
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}
