//! An OTLP/HTTP receiver for the tests: it takes the processes' real exports
//! (`POST /v1/traces`, protobuf) and decodes them with the `opentelemetry-proto` types,
//! so a test sees the spans a collector would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as ProtoValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;
use tokio::net::TcpListener;

/// The largest export the receiver reads.
const MAX_EXPORT_BYTES: usize = 16 * 1024 * 1024;

/// One span as exported, with its ids in lowercase hex.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// `service.name` of the exporting process.
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// `server`, `client`, `producer`, `consumer` or `internal`.
    pub kind: &'static str,
    /// Attribute values as strings (ints in decimal).
    pub attributes: HashMap<String, String>,
}

/// Listens on a free loopback port until dropped.
pub struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Collector {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("the collector binds");
        let addr = listener.local_addr().expect("a local address");
        let spans = Arc::new(Mutex::new(Vec::new()));
        let server = tokio::spawn(serve(listener, Arc::clone(&spans)));
        Self { addr, spans, server }
    }

    /// For `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().expect("the span list").clone()
    }

    /// Every span of one trace received so far.
    pub fn trace(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        self.spans().into_iter().filter(|s| s.trace_id == trace_id).collect()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve(listener: TcpListener, spans: Arc<Mutex<Vec<ReceivedSpan>>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let spans = Arc::clone(&spans);
        let service = hyper::service::service_fn(move |request| {
            let spans = Arc::clone(&spans);
            async move { Ok::<_, std::convert::Infallible>(receive(request, &spans).await) }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn receive(request: hyper::Request<Incoming>, spans: &Mutex<Vec<ReceivedSpan>>) -> hyper::Response<Full<Bytes>> {
    let answer = |status: u16, body: Vec<u8>| {
        hyper::Response::builder()
            .status(status)
            .header("content-type", "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    };
    if request.method() != hyper::Method::POST || request.uri().path() != "/v1/traces" {
        return answer(404, Vec::new());
    }
    let Ok(body) = Limited::new(request.into_body(), MAX_EXPORT_BYTES).collect().await else {
        return answer(400, Vec::new());
    };
    let Ok(export) = ExportTraceServiceRequest::decode(body.to_bytes()) else {
        return answer(400, Vec::new());
    };
    let mut received = Vec::new();
    for resource_spans in export.resource_spans {
        let resource = resource_spans.resource.map(|r| attributes(&r.attributes)).unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
            received.push(ReceivedSpan {
                service: service.clone(),
                name: span.name.clone(),
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
                kind: kind(span.kind),
                attributes: attributes(&span.attributes),
            });
        }
    }
    spans.lock().expect("the span list").extend(received);
    answer(200, ExportTraceServiceResponse::default().encode_to_vec())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn kind(kind: i32) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

fn attributes(pairs: &[KeyValue]) -> HashMap<String, String> {
    pairs
        .iter()
        .filter_map(|pair| {
            let value = match pair.value.as_ref()?.value.as_ref()? {
                ProtoValue::StringValue(s) => s.clone(),
                ProtoValue::IntValue(i) => i.to_string(),
                ProtoValue::BoolValue(b) => b.to_string(),
                ProtoValue::DoubleValue(d) => d.to_string(),
                _ => return None,
            };
            Some((pair.key.clone(), value))
        })
        .collect()
}
