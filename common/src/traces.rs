//! Traces: W3C Trace Context in and out of every process, and OpenTelemetry export over
//! OTLP/HTTP (protobuf) when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! The services make their spans through `tracing` (the `tracing-opentelemetry` layer
//! that [`crate::telemetry::init`] installs); the edge builds its one span per request by
//! hand and hands it to the same queue ([`Tracing::export`]). With no endpoint, spans
//! still get ids (log lines carry `trace_id`, `traceparent` still travels) but nothing is
//! queued or sent.
//!
//! Export never slows a request: a finished span goes into a bounded queue that the
//! SDK's batch processor drains on its own thread. A span that finds the queue full, or
//! whose batch the collector refused or never answered, is dropped and counted in
//! `otel_spans_dropped_total{reason}`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, InstrumentationScope};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider, ShouldSample, SpanData, SpanExporter,
    SpanProcessor,
};
use opentelemetry_sdk::Resource;
use prometheus::{IntCounterVec, Opts, Registry};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::{EnvReader, EnvSource, Var};

pub const OTEL_EXPORTER_OTLP_ENDPOINT: Var = Var::optional(
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTLP/HTTP collector base URL (http://host:4318); unset: no spans are exported",
);
pub const OTEL_SERVICE_NAME: Var =
    Var::optional("OTEL_SERVICE_NAME", "the service name on exported spans (default: the process name)");
pub const OTEL_TRACES_SAMPLER: Var = Var::new(
    "OTEL_TRACES_SAMPLER",
    "parentbased_always_on",
    "always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio",
);
pub const OTEL_TRACES_SAMPLER_ARG: Var =
    Var::optional("OTEL_TRACES_SAMPLER_ARG", "the ratio (0.0 to 1.0) of the traceidratio samplers");
/// What `--help` lists; the SDK reads the rest of the standard `OTEL_*` variables
/// (`OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_BSP_*`, `OTEL_RESOURCE_ATTRIBUTES`) itself.
pub const VARS: &[Var] =
    &[OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG];

/// The trace-specific endpoint variable the OTLP exporter also honours.
const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// The SDK's variable for the span queue's bound, and its default there.
const QUEUE_SIZE: &str = "OTEL_BSP_MAX_QUEUE_SIZE";
const DEFAULT_QUEUE: usize = 2048;
/// The longest a shutdown waits for the last spans to leave.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// Spans dropped on their way out, by reason; one counter for the process, registered
/// in each registry that renders `/metrics`.
static DROPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            "otel_spans_dropped_total",
            "Finished spans not exported: the queue was full or the collector failed.",
        ),
        &["reason"],
    )
    .expect("a valid metric definition")
});

/// Adds the dropped-spans counter to `registry`.
pub fn register_metrics(registry: &Registry) {
    // Registered once per registry; a second registration of the same one is harmless.
    let _ = registry.register(Box::new(DROPPED.clone()));
}

/// What the environment says about export, read once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceSettings {
    pub exporting: bool,
    pub service_name: String,
    /// Finished spans waiting for export at most (`OTEL_BSP_MAX_QUEUE_SIZE`).
    pub queue_capacity: usize,
}

impl TraceSettings {
    pub fn from_env(source: &dyn EnvSource, process_name: &str) -> Self {
        let reader = EnvReader::new(source);
        let endpoint = reader.raw(&OTEL_EXPORTER_OTLP_ENDPOINT).or_else(|| source.get(TRACES_ENDPOINT));
        Self {
            exporting: endpoint.is_some_and(|e| !e.trim().is_empty()),
            service_name: reader.raw(&OTEL_SERVICE_NAME).unwrap_or_else(|| process_name.to_owned()),
            queue_capacity: source
                .get(QUEUE_SIZE)
                .and_then(|v| v.trim().parse().ok())
                .filter(|&n: &usize| n > 0)
                .unwrap_or(DEFAULT_QUEUE),
        }
    }
}

/// The process's tracer provider and, when exporting, its span queue.
pub struct Tracing {
    provider: SdkTracerProvider,
    queue: Option<SpanQueue>,
    scope: InstrumentationScope,
    /// The `OTEL_TRACES_SAMPLER` sampler, for spans built by hand (the edge's).
    sampler: Box<dyn ShouldSample>,
}

static INSTALLED: OnceLock<Tracing> = OnceLock::new();

impl Tracing {
    /// Builds the provider `settings` describe and makes it the process's (once; later
    /// calls return the first). Trace Context becomes the propagator.
    pub fn install(settings: &TraceSettings) -> anyhow::Result<&'static Tracing> {
        if let Some(installed) = INSTALLED.get() {
            return Ok(installed);
        }
        let tracing = Self::build(settings)?;
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        opentelemetry::global::set_tracer_provider(tracing.provider.clone());
        Ok(INSTALLED.get_or_init(|| tracing))
    }

    /// The installed one, if any.
    pub fn installed() -> Option<&'static Tracing> {
        INSTALLED.get()
    }

    pub(crate) fn build(settings: &TraceSettings) -> anyhow::Result<Self> {
        let resource = Resource::builder().with_service_name(settings.service_name.clone()).build();
        let mut builder = SdkTracerProvider::builder().with_resource(resource.clone());
        let queue = if settings.exporting {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .build()
                .map_err(|e| anyhow::anyhow!("cannot set up the OTLP exporter: {e}"))?;
            let queue = SpanQueue::new(exporter, &resource, settings.queue_capacity);
            builder = builder.with_span_processor(queue.clone());
            Some(queue)
        } else {
            None
        };
        let scope = InstrumentationScope::builder(settings.service_name.clone())
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        Ok(Self {
            provider: builder.build(),
            queue,
            scope,
            sampler: opentelemetry_sdk::trace::Config::default().sampler,
        })
    }

    pub fn tracer(&self) -> SdkTracer {
        self.provider.tracer_with_scope(self.scope.clone())
    }

    /// Whether finished spans go anywhere.
    pub fn exporting(&self) -> bool {
        self.queue.is_some()
    }

    pub fn sampler(&self) -> &dyn ShouldSample {
        self.sampler.as_ref()
    }

    pub fn scope(&self) -> &InstrumentationScope {
        &self.scope
    }

    /// Queues a span built by hand; dropped (and counted) when the queue is full.
    pub fn export(&self, span: SpanData) {
        if let Some(queue) = &self.queue {
            queue.on_end(span);
        }
    }

    /// Sends what is queued, waiting at most a few seconds (shutdown).
    pub fn shutdown(&self) {
        let _ = self.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT);
    }
}

/// The SDK's batch processor behind a gate that counts what it lets in, so a full queue
/// is counted here (the SDK only logs its drops). The exporter's side lowers the count
/// as batches leave, and counts a batch the collector did not take.
#[derive(Debug, Clone)]
struct SpanQueue {
    batch: Arc<BatchSpanProcessor>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

impl SpanQueue {
    fn new(exporter: impl SpanExporter + 'static, resource: &Resource, capacity: usize) -> Self {
        let queued = Arc::new(AtomicUsize::new(0));
        let exporter = CountingExporter { inner: exporter, queued: Arc::clone(&queued) };
        // The SDK's queue has the same bound as the gate, so it never drops on its own.
        let config = BatchConfigBuilder::default().with_max_queue_size(capacity).build();
        let mut batch = BatchSpanProcessor::builder(exporter).with_batch_config(config).build();
        // Set here: the provider's own call reaches a clone, which cannot pass it on.
        batch.set_resource(resource);
        Self { batch: Arc::new(batch), queued, capacity }
    }
}

impl SpanProcessor for SpanQueue {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.batch.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        let admitted = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.capacity).then_some(n + 1))
            .is_ok();
        if admitted {
            self.batch.on_end(span);
        } else {
            DROPPED.with_label_values(&["queue_full"]).inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.batch.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.batch.shutdown_with_timeout(timeout)
    }
}

#[derive(Debug)]
struct CountingExporter<E> {
    inner: E,
    queued: Arc<AtomicUsize>,
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        self.queued.fetch_sub(spans, Ordering::AcqRel);
        let result = self.inner.export(batch).await;
        if result.is_err() {
            DROPPED.with_label_values(&["export_failed"]).inc_by(spans as u64);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The trace context an HTTP request carries (`traceparent`, `tracestate`); an empty
/// context when it carries none or an invalid one.
pub fn context_from_headers(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers))
}

/// The context a stored or received `traceparent` (and `tracestate`) names.
pub fn context_from_traceparent(traceparent: &str, tracestate: Option<&str>) -> Context {
    TraceContextPropagator::new().extract(&Carried { traceparent, tracestate })
}

/// `span`, made the child of the span a carried `traceparent` names (one kept with an
/// outbox entry, or an AMQP message's header); without one, or with an invalid one, it
/// starts a trace of its own.
pub fn continue_trace(span: tracing::Span, traceparent: Option<&str>) -> tracing::Span {
    if let Some(traceparent) = traceparent {
        let _ = span.set_parent(context_from_traceparent(traceparent, None));
    }
    span
}

/// The `traceparent` of the current `tracing` span, for a message that continues its
/// trace later or elsewhere (an outbox entry, an AMQP message).
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current().context())
}

/// `00-{trace id}-{span id}-{flags}` of `cx`'s span, if it has a valid one.
pub fn traceparent_of(cx: &Context) -> Option<String> {
    let span = cx.span();
    let context: &SpanContext = span.span_context();
    context
        .is_valid()
        .then(|| format!("00-{}-{}-{:02x}", context.trace_id(), context.span_id(), context.trace_flags().to_u8()))
}

struct Carried<'a> {
    traceparent: &'a str,
    tracestate: Option<&'a str>,
}

impl Extractor for Carried<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => Some(self.traceparent),
            TRACESTATE => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_follows_the_endpoint_and_the_name_defaults_to_the_process() {
        let env = |pairs: &[(&str, &str)]| -> std::collections::HashMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let unset = TraceSettings::from_env(&env(&[]), "svc-tasks");
        assert_eq!(unset, TraceSettings { exporting: false, service_name: "svc-tasks".into(), queue_capacity: 2048 });
        let set = TraceSettings::from_env(
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_SERVICE_NAME", "tasks-a"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "64"),
            ]),
            "svc-tasks",
        );
        assert_eq!(set, TraceSettings { exporting: true, service_name: "tasks-a".into(), queue_capacity: 64 });
        let traces_only = TraceSettings::from_env(&env(&[(TRACES_ENDPOINT, "http://c:4318/v1/traces")]), "edge");
        assert!(traces_only.exporting);
        assert!(!TraceSettings::from_env(&env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]), "edge").exporting);
    }

    /// A collector that refuses every export.
    #[derive(Debug)]
    struct Refusing;

    impl SpanExporter for Refusing {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure("collector down".into()))
        }
    }

    fn finished_span() -> SpanData {
        SpanData {
            span_context: SpanContext::empty_context(),
            parent_span_id: opentelemetry::trace::SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: opentelemetry::trace::SpanKind::Server,
            name: "request".into(),
            start_time: std::time::SystemTime::now(),
            end_time: std::time::SystemTime::now(),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: opentelemetry::trace::Status::Unset,
            instrumentation_scope: InstrumentationScope::default(),
        }
    }

    #[test]
    fn spans_past_the_queue_bound_and_refused_batches_are_counted_never_waited_for() {
        let dropped = |reason: &str| DROPPED.with_label_values(&[reason]).get();
        let (full_before, failed_before) = (dropped("queue_full"), dropped("export_failed"));
        let queue = SpanQueue::new(Refusing, &Resource::builder_empty().build(), 4);
        // The batch leaves after 5 s or on a flush: until then the queue holds 4.
        for _ in 0..10 {
            queue.on_end(finished_span());
        }
        assert_eq!(dropped("queue_full") - full_before, 6);
        let _ = queue.force_flush();
        assert_eq!(dropped("export_failed") - failed_before, 4);
        // Room again once the batch has left.
        queue.on_end(finished_span());
        assert_eq!(dropped("queue_full") - full_before, 6);
        let _ = queue.shutdown();
    }

    #[test]
    fn a_carried_traceparent_round_trips_and_a_bad_one_is_no_context() {
        let sent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = context_from_traceparent(sent, Some("vendor=1"));
        assert_eq!(traceparent_of(&cx).as_deref(), Some(sent));
        assert_eq!(cx.span().span_context().trace_state().header(), "vendor=1");
        for bad in ["", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "zz-4bf9-00f0-01", "garbage"] {
            assert!(traceparent_of(&context_from_traceparent(bad, None)).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn headers_carry_a_context() {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00".parse().unwrap());
        let cx = context_from_headers(&headers);
        assert!(cx.span().span_context().is_remote());
        assert!(!cx.span().span_context().is_sampled());
        assert!(!context_from_headers(&HeaderMap::new()).span().span_context().is_valid());
    }
}
