//! The edge's Prometheus metrics, registered on a registry owned by this process.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use todo_common::metrics::{counter, counter_vec, gauge, register};

const BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

pub struct EdgeMetrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream_duration: HistogramVec,
    rate_limited: IntCounterVec,
    limit_store_failures: IntCounter,
    limit_store_leases: IntCounter,
    unauthorized: IntCounterVec,
    reloads: IntCounterVec,
    generation: IntGauge,
    info: IntGaugeVec,
}

fn histogram(registry: &Registry, name: &str, help: &str, label: &str) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(BUCKETS.to_vec());
    register(registry, HistogramVec::new(opts, &[label]).expect("valid histogram"))
}

impl EdgeMetrics {
    pub fn new() -> Self {
        let registry = todo_common::metrics::process_registry();
        let reloads = counter_vec(&registry, "edge_policy_reloads_total", "Policy reloads, by result.", &["result"]);
        // Both series exist from the start, so `increase(...)` alerts see the first failure.
        reloads.with_label_values(&["success"]);
        reloads.with_label_values(&["failure"]);
        Self {
            requests: counter_vec(
                &registry,
                "edge_requests_total",
                "Requests answered, by route name and status.",
                &["route", "status"],
            ),
            duration: histogram(&registry, "edge_request_duration_seconds", "Time to answer a request.", "route"),
            upstream_duration: histogram(
                &registry,
                "edge_upstream_duration_seconds",
                "Time from choosing an upstream address to its response header.",
                "upstream",
            ),
            rate_limited: counter_vec(&registry, "edge_rate_limited_total", "Requests refused with 429.", &["route"]),
            limit_store_failures: counter(
                &registry,
                "edge_rate_limit_store_failures_total",
                "Calls to the shared rate-limit store (Redis) that failed or timed out; limits then count per replica.",
            ),
            limit_store_leases: counter(
                &registry,
                "edge_rate_limit_leases_total",
                "Calls leasing a batch of a shared rate-limit budget from Redis: the request path's Redis round trips.",
            ),
            unauthorized: counter_vec(
                &registry,
                "edge_unauthorized_total",
                "Requests refused with 401, by reason.",
                &["reason"],
            ),
            reloads,
            generation: gauge(&registry, "edge_policy_generation", "How many policies this process has loaded."),
            info: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "edge_policy_info",
                        "1 for the loaded policy; its fingerprint is the same on every replica with the same files.",
                    ),
                    &["fingerprint"],
                )
                .expect("valid gauge"),
            ),
            registry,
        }
    }

    pub fn request(&self, route: &str, status: u16, elapsed: Duration) {
        self.requests.with_label_values(&[route, &status.to_string()]).inc();
        self.duration.with_label_values(&[route]).observe(elapsed.as_secs_f64());
    }

    /// As `request`, through the route's cached handles: after a route's first request
    /// with a given status, no label hashing, `String` or lock of the metric vecs.
    pub fn route_request(&self, cached: &RouteMetrics, route: &str, status: u16, elapsed: Duration) {
        let slot = usize::from(status).checked_sub(FIRST_STATUS).and_then(|i| cached.requests_by_status.get(i));
        match slot {
            Some(slot) => slot.get_or_init(|| self.requests.with_label_values(&[route, &status.to_string()])).inc(),
            None => self.requests.with_label_values(&[route, &status.to_string()]).inc(),
        }
        cached.duration.get_or_init(|| self.duration.with_label_values(&[route])).observe(elapsed.as_secs_f64());
    }

    /// As `upstream`, through the route's cached handle.
    pub fn route_upstream(&self, cached: &RouteMetrics, upstream: &str, elapsed: Duration) {
        cached
            .upstream_duration
            .get_or_init(|| self.upstream_duration.with_label_values(&[upstream]))
            .observe(elapsed.as_secs_f64());
    }

    pub fn upstream(&self, upstream: &str, elapsed: Duration) {
        self.upstream_duration.with_label_values(&[upstream]).observe(elapsed.as_secs_f64());
    }

    pub fn rate_limited(&self, route: &str) {
        self.rate_limited.with_label_values(&[route]).inc();
    }

    pub fn limit_store_failures(&self) -> IntCounter {
        self.limit_store_failures.clone()
    }

    pub fn limit_store_leases(&self) -> IntCounter {
        self.limit_store_leases.clone()
    }

    pub fn unauthorized(&self, reason: &str) {
        self.unauthorized.with_label_values(&[reason]).inc();
    }

    pub fn reload_failed(&self) {
        self.reloads.with_label_values(&["failure"]).inc();
    }

    pub fn reloaded(&self, generation: u64, fingerprint: u64) {
        self.reloads.with_label_values(&["success"]).inc();
        self.generation.set(i64::try_from(generation).unwrap_or(i64::MAX));
        self.info.reset();
        self.info.with_label_values(&[&format!("{fingerprint:016x}")]).set(1);
    }

    /// The registry in Prometheus text format.
    /// For metrics other parts of the process own (the token verifier's).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn render(&self) -> Result<Vec<u8>, prometheus::Error> {
        let mut buffer = Vec::with_capacity(16 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        Ok(buffer)
    }
}

/// Statuses 100..=599 get a cached counter each; anything else (0: no response) goes
/// through the labelled lookup.
const FIRST_STATUS: usize = 100;
const STATUS_SLOTS: usize = 500;

/// One route's series of this process's `EdgeMetrics`, resolved on first use and kept
/// with the route (a reload builds new routes, which resolve the same series again).
pub struct RouteMetrics {
    requests_by_status: Box<[OnceLock<IntCounter>]>,
    duration: OnceLock<Histogram>,
    upstream_duration: OnceLock<Histogram>,
}

impl RouteMetrics {
    pub fn new() -> Self {
        Self {
            requests_by_status: (0..STATUS_SLOTS).map(|_| OnceLock::new()).collect(),
            duration: OnceLock::new(),
            upstream_duration: OnceLock::new(),
        }
    }
}

impl Default for RouteMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Default for EdgeMetrics {
    fn default() -> Self {
        Self::new()
    }
}
