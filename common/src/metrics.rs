//! Prometheus metrics: each process owns a [`Registry`] (no global state, so tests
//! stay isolated) and the request metrics every HTTP server records.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response};
use http_body_util::Full;
use prometheus::core::Collector;
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};

/// A process's registry, holding from the start the process metrics (CPU seconds,
/// resident memory, open and maximum file descriptors, start time) every dashboard
/// and capacity alert needs.
pub fn process_registry() -> Registry {
    let registry = Registry::new();
    registry
        .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
        .expect("the process metrics are registered first");
    registry
}

/// Registers `metric` and hands it back; a clash of names is a bug found at start.
pub fn register<M: Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry.register(Box::new(metric.clone())).expect("metric names are unique per process");
    metric
}

pub fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter"))
}

pub fn counter(registry: &Registry, name: &str, help: &str) -> prometheus::IntCounter {
    register(registry, prometheus::IntCounter::new(name, help).expect("valid counter"))
}

pub fn gauge(registry: &Registry, name: &str, help: &str) -> prometheus::IntGauge {
    register(registry, prometheus::IntGauge::new(name, help).expect("valid gauge"))
}

/// Request counts and latency by route template, method and status.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl HttpMetrics {
    pub fn new(registry: &Registry) -> Self {
        let requests = counter_vec(
            registry,
            "http_requests_total",
            "HTTP requests answered, by route template, method and status.",
            &["route", "method", "status"],
        );
        let duration = register(
            registry,
            HistogramVec::new(
                HistogramOpts::new("http_request_duration_seconds", "Time to answer an HTTP request.")
                    .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
                &["route", "method"],
            )
            .expect("valid histogram"),
        );
        Self { requests, duration }
    }

    pub fn observe(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let buf = itoa_status(status);
        let status = std::str::from_utf8(&buf).unwrap_or("000");
        self.requests.with_label_values(&[route, method, status]).inc();
        self.duration.with_label_values(&[route, method]).observe(elapsed.as_secs_f64());
    }
}

/// A status code as three ASCII digits, without allocating.
fn itoa_status(status: u16) -> [u8; 3] {
    let s = status.min(999);
    [b'0' + (s / 100) as u8, b'0' + (s / 10 % 10) as u8, b'0' + (s % 10) as u8]
}

/// The registry in Prometheus text format.
pub fn render(registry: &Registry) -> Response<Full<Bytes>> {
    let encoder = TextEncoder::new();
    let mut buffer = Vec::with_capacity(8 * 1024);
    if let Err(e) = encoder.encode(&registry.gather(), &mut buffer) {
        return crate::Problem::internal(&e).into_response();
    }
    let mut response = Response::new(Full::new(Bytes::from(buffer)));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_route_and_status() {
        let registry = Registry::new();
        let metrics = HttpMetrics::new(&registry);
        metrics.observe("/tasks/{id}", "GET", 404, Duration::from_millis(3));
        let response = render(&registry);
        let text =
            futures::executor::block_on(http_body_util::BodyExt::collect(response.into_body())).unwrap().to_bytes();
        let text = String::from_utf8_lossy(&text);
        assert!(text.contains(r#"http_requests_total{method="GET",route="/tasks/{id}",status="404"} 1"#), "{text}");
    }

    #[test]
    fn a_process_registry_reports_cpu_memory_and_file_descriptors() {
        let response = render(&process_registry());
        let text =
            futures::executor::block_on(http_body_util::BodyExt::collect(response.into_body())).unwrap().to_bytes();
        let text = String::from_utf8_lossy(&text);
        for name in ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"] {
            assert!(text.contains(&format!("\n{name} ")), "{name} missing:\n{text}");
        }
    }
}
