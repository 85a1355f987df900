//! The edge's server span, one per request, set up by hand rather than through `tracing`
//! (which would cost every request a span in the subscriber, traced or not).
//!
//! The edge continues the client's trace when its `traceparent` is valid, or starts one,
//! and sends its own span's `traceparent` upstream either way, so the services' spans
//! and every log line of the request share a `trace_id`. The sampling decision is the
//! `OTEL_TRACES_SAMPLER` sampler's, taken once at the start. A sampled span is built when
//! the request ends and queued for export, only when export is on.

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::SystemTime;

use http::{HeaderMap, HeaderValue};
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SamplingDecision, SpanData, SpanEvents, SpanLinks};
use todo_common::traces::{self, Tracing};

/// The span's name until the request has a route.
const SPAN_NAME: &str = "request";

/// Where the edge's spans go: nowhere, with `OTEL_EXPORTER_OTLP_ENDPOINT` unset.
#[derive(Clone, Copy)]
pub struct EdgeTracer {
    tracing: Option<&'static Tracing>,
}

impl EdgeTracer {
    /// The process's tracing, as `telemetry::init` installed it (none in unit tests).
    pub fn installed() -> Self {
        Self { tracing: Tracing::installed() }
    }

    /// The trace this request belongs to, from its headers.
    pub fn start(&self, headers: &HeaderMap) -> RequestTrace {
        // Most requests carry no trace: skip the propagator's work for them.
        let parent = if headers.contains_key(traces::TRACEPARENT) {
            traces::context_from_headers(headers)
        } else {
            Context::new()
        };
        let remote = parent.span().span_context().clone();
        let ids = RandomIdGenerator::default();
        let trace_id = if remote.is_valid() { remote.trace_id() } else { ids.new_trace_id() };
        let sampled = match self.tracing {
            Some(tracing) => {
                let decision =
                    tracing.sampler().should_sample(Some(&parent), trace_id, SPAN_NAME, &SpanKind::Server, &[], &[]);
                decision.decision == SamplingDecision::RecordAndSample
            }
            // No SDK at all (unit tests): follow the client, sample new traces.
            None => !remote.is_valid() || remote.is_sampled(),
        };
        let span_id = ids.new_span_id();
        RequestTrace {
            header: traceparent(trace_id, span_id, sampled),
            trace_id,
            span_id,
            parent: remote.is_valid().then(|| remote.span_id()),
            state: remote.trace_state().clone(),
            sampled,
            started: SystemTime::now(),
        }
    }

    /// Queues the finished span of a sampled request; nothing to do otherwise.
    pub fn finish(&self, trace: &RequestTrace, span: FinishedRequest<'_>) {
        let Some(tracing) = self.tracing.filter(|t| t.exporting() && trace.sampled) else {
            return;
        };
        tracing.export(trace.span_data(span, tracing));
    }
}

/// `00-{trace id}-{span id}-{flags}`, all hex.
const TRACEPARENT_LEN: usize = 55;

/// The upstream's `traceparent`, hex-encoded once per request: the access log writes its
/// ids from the same bytes (formatting them through `Display` cost about 2 % of the
/// edge's instructions per request).
fn traceparent(trace_id: TraceId, span_id: SpanId, sampled: bool) -> [u8; TRACEPARENT_LEN] {
    let mut header = *b"00-00000000000000000000000000000000-0000000000000000-00";
    // Infallible: 16 and 8 bytes fill exactly 32 and 16 hex digits.
    let _ = hex::encode_to_slice(trace_id.to_bytes(), &mut header[3..35]);
    let _ = hex::encode_to_slice(span_id.to_bytes(), &mut header[36..52]);
    if sampled {
        header[54] = b'1';
    }
    header
}

/// One request's place in its trace.
#[derive(Debug, Clone)]
pub struct RequestTrace {
    header: [u8; TRACEPARENT_LEN],
    pub trace_id: TraceId,
    /// The edge's own span, the parent of the upstream's.
    pub span_id: SpanId,
    /// The client's span, when it sent a valid `traceparent`.
    parent: Option<SpanId>,
    state: TraceState,
    sampled: bool,
    started: SystemTime,
}

/// What the span says about the request once it is over.
pub struct FinishedRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub upstream: Option<&'a str>,
    pub client_ip: Option<IpAddr>,
    pub protocol: &'static str,
}

impl RequestTrace {
    /// `traceparent` for the upstream request: this trace, the edge's span.
    pub fn traceparent(&self) -> HeaderValue {
        HeaderValue::from_bytes(&self.header).expect("hex digits and dashes are a valid header value")
    }

    /// The trace id in hex, as the access log writes it.
    pub fn trace_id_hex(&self) -> &str {
        std::str::from_utf8(&self.header[3..35]).unwrap_or_default()
    }

    /// The edge's span id in hex.
    pub fn span_id_hex(&self) -> &str {
        std::str::from_utf8(&self.header[36..52]).unwrap_or_default()
    }

    /// Whether the request got as far as having a trace.
    pub fn is_valid(&self) -> bool {
        self.trace_id != TraceId::INVALID
    }

    /// Whether the client's `tracestate` goes on: only with the `traceparent` it belongs to.
    pub fn continues_client_trace(&self) -> bool {
        self.parent.is_some()
    }

    fn span_data(&self, request: FinishedRequest<'_>, tracing: &Tracing) -> SpanData {
        let context = SpanContext::new(self.trace_id, self.span_id, TraceFlags::SAMPLED, false, self.state.clone());
        let mut attributes = vec![
            KeyValue::new("http.request.method", request.method.to_owned()),
            KeyValue::new("url.path", request.path.to_owned()),
            KeyValue::new("http.route", request.route.to_owned()),
            KeyValue::new("http.response.status_code", i64::from(request.status)),
            KeyValue::new("network.protocol.name", "http"),
            KeyValue::new("network.protocol.version", request.protocol),
        ];
        if let Some(upstream) = request.upstream {
            attributes.push(KeyValue::new("edge.upstream", upstream.to_owned()));
        }
        if let Some(client_ip) = request.client_ip {
            attributes.push(KeyValue::new("client.address", client_ip.to_string()));
        }
        let status = if request.status >= 500 || request.status == 0 {
            Status::error(format!("answered {}", request.status))
        } else {
            Status::Unset
        };
        SpanData {
            span_context: context,
            parent_span_id: self.parent.unwrap_or(SpanId::INVALID),
            parent_span_is_remote: self.parent.is_some(),
            span_kind: SpanKind::Server,
            name: Cow::Owned(format!("{} {}", request.method, request.route)),
            start_time: self.started,
            end_time: SystemTime::now(),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: tracing.scope().clone(),
        }
    }
}

impl Default for RequestTrace {
    /// No trace: a request refused before its headers were read.
    fn default() -> Self {
        Self {
            header: [b'0'; TRACEPARENT_LEN],
            trace_id: TraceId::INVALID,
            span_id: SpanId::INVALID,
            parent: None,
            state: TraceState::default(),
            sampled: false,
            started: SystemTime::UNIX_EPOCH,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    const CLIENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_continued_with_a_new_span() {
        let trace = EdgeTracer { tracing: None }.start(&headers(&[("traceparent", CLIENT), ("tracestate", "a=1")]));
        assert_eq!(trace.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(trace.continues_client_trace());
        let sent = trace.traceparent();
        let sent = sent.to_str().unwrap();
        assert!(sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{sent}");
        assert!(!sent.contains("00f067aa0ba902b7"), "the edge's own span goes upstream: {sent}");
        assert!(sent.ends_with("-01"));
        assert_eq!(&sent[3..35], trace.trace_id_hex());
        assert_eq!(&sent[36..52], trace.span_id_hex());
        assert_eq!(trace.span_id_hex(), trace.span_id.to_string());
        let upstream_parent = traces::context_from_traceparent(sent, None);
        assert_eq!(upstream_parent.span().span_context().span_id(), trace.span_id);
    }

    #[test]
    fn an_invalid_or_missing_traceparent_starts_a_trace() {
        for sent in [None, Some("garbage"), Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01")] {
            let pairs: Vec<(&'static str, &str)> = sent.map(|s| ("traceparent", s)).into_iter().collect();
            let trace = EdgeTracer { tracing: None }.start(&headers(&pairs));
            assert!(trace.is_valid() && !trace.continues_client_trace(), "{sent:?}");
            assert_ne!(trace.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        }
    }

    #[test]
    fn an_unsampled_client_trace_stays_unsampled() {
        let unsampled = CLIENT.replace("-01", "-00");
        let trace = EdgeTracer { tracing: None }.start(&headers(&[("traceparent", &unsampled)]));
        assert!(trace.traceparent().to_str().unwrap().ends_with("-00"));
    }
}
