//! The HTTP server every service runs: one place for the cross-cutting work (request
//! ids, token verification, health and metrics endpoints, request timeout, access log,
//! request metrics, graceful drain), so handlers only handle.
//!
//! A service implements [`Api`]: it parses a request into its own typed endpoint,
//! which says whether it needs a token, and handles it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::field::Empty;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::auth::{bearer_token, Claims, Subject, TokenVerifier};
use crate::config::{EnvReader, Var, SHUTDOWN_GRACE_SECONDS};
use crate::health::{liveness_response, readiness_response, BackendReport};
use crate::metrics::HttpMetrics;
use crate::{request_id, traces, Problem};

pub type HttpResponse = http::Response<Full<Bytes>>;

pub const MAX_BODY_BYTES: Var = Var::new("MAX_BODY_BYTES", "65536", "largest accepted request body");
/// What [`ServerSettings::read`] reads besides the service's own listen address.
pub const SERVER_VARS: &[Var] = &[SHUTDOWN_GRACE_SECONDS, MAX_BODY_BYTES];

/// The settings of a service's HTTP server.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen_addr: String,
    pub shutdown_grace: Duration,
    pub max_body_bytes: usize,
}

impl ServerSettings {
    /// Reads [`SERVER_VARS`] and `listen`, whose default is the service's own port.
    pub fn read(reader: &mut EnvReader<'_>, listen: &Var) -> Self {
        let settings = Self {
            listen_addr: reader.string(listen),
            shutdown_grace: reader.seconds(&SHUTDOWN_GRACE_SECONDS, 10),
            max_body_bytes: reader.parse_or(&MAX_BODY_BYTES, 65_536),
        };
        if settings.max_body_bytes == 0 {
            reader.problem("MAX_BODY_BYTES must be greater than 0".into());
        }
        settings
    }
}

/// Bounds that protect a process from slow or greedy clients.
const MAX_CONNECTIONS: usize = 2048;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// A typed endpoint: its route template (the metrics label) and whether it needs a token.
pub trait Endpoint: Send {
    fn route(&self) -> &'static str;
    fn requires_token(&self) -> bool;
}

/// What a handler gets besides its endpoint.
pub struct Request {
    pub request_id: String,
    /// The verified claims, present whenever the endpoint requires a token.
    pub claims: Option<Claims>,
    pub headers: HeaderMap,
    pub query: Option<String>,
    pub body: Incoming,
}

impl Request {
    /// The verified caller; endpoints that need a token always have one.
    pub fn subject(&self) -> Result<&Subject, Problem> {
        self.claims.as_ref().map(|c| &c.sub).ok_or_else(|| Problem::unauthorized("a bearer token is required"))
    }
}

#[async_trait]
pub trait Api: Send + Sync + 'static {
    type Endpoint: Endpoint;

    /// Method + path to an endpoint, or the 404/405 problem.
    fn parse_endpoint(&self, method: &Method, path: &str) -> Result<Self::Endpoint, Problem>;

    async fn handle(&self, endpoint: Self::Endpoint, request: Request) -> Result<HttpResponse, Problem>;

    /// The state of each backend, for `/readyz`.
    async fn readiness(&self) -> Vec<BackendReport>;
}

/// Everything the server loop needs besides the listener.
pub struct HttpApp<A> {
    pub api: Arc<A>,
    pub verifier: Arc<TokenVerifier>,
    pub registry: Registry,
    pub metrics: HttpMetrics,
}

impl<A: Api> HttpApp<A> {
    pub fn new(api: Arc<A>, verifier: Arc<TokenVerifier>, registry: Registry) -> Self {
        let metrics = HttpMetrics::new(&registry);
        verifier.report_to(&registry);
        crate::traces::register_metrics(&registry);
        Self { api, verifier, registry, metrics }
    }

    async fn answer(&self, request: hyper::Request<Incoming>) -> HttpResponse {
        let started = Instant::now();
        let method = request.method().clone();
        let request_id = request_id::keep_or_make(request.headers().get(request_id::HEADER).map(|v| v.as_bytes()));
        let path = request.uri().path().to_owned();
        let has_body = request_has_body(request.headers());
        // The server span, a child of the caller's (the edge's) when it sent `traceparent`.
        let span = tracing::info_span!(
            "request",
            otel.name = Empty,
            otel.kind = "server",
            otel.status_code = Empty,
            request_id = %request_id,
            http.request.method = %method,
            url.path = %path,
            http.route = Empty,
            http.response.status_code = Empty,
        );
        let _ = span.set_parent(traces::context_from_headers(request.headers()));

        let (route, mut response) = async {
            let (route, result) = self.dispatch(request, request_id.clone()).await;
            let response = result.unwrap_or_else(Problem::into_response);
            let current = tracing::Span::current();
            current.record("otel.name", format!("{method} {route}"));
            current.record("http.route", route);
            current.record("http.response.status_code", response.status().as_u16());
            if response.status().is_server_error() {
                current.record("otel.status_code", "ERROR");
            }
            tracing::info!(
                method = %method,
                path = %path,
                route,
                status = response.status().as_u16(),
                duration_ms = started.elapsed().as_secs_f64() * 1000.0,
                "request"
            );
            (route, response)
        }
        .instrument(span)
        .await;

        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(request_id::HEADER, value);
        }
        if has_body && (response.status().is_client_error() || response.status().is_server_error()) {
            // The body may be left unread; say so, or a proxy pooling this connection
            // would send its next request into a connection hyper is about to close.
            response.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        self.metrics.observe(route, method.as_str(), response.status().as_u16(), started.elapsed());
        response
    }

    async fn dispatch(
        &self,
        request: hyper::Request<Incoming>,
        request_id: String,
    ) -> (&'static str, Result<HttpResponse, Problem>) {
        let (parts, body) = request.into_parts();
        if parts.method == Method::GET {
            match parts.uri.path() {
                "/healthz" => return ("/healthz", Ok(liveness_response())),
                "/readyz" => {
                    let mut reports = self.api.readiness().await;
                    reports.extend(self.verifier.readiness());
                    return ("/readyz", Ok(readiness_response(&reports, self.verifier.dev_mode())));
                }
                "/metrics" => return ("/metrics", Ok(crate::metrics::render(&self.registry))),
                _ => {}
            }
        }
        let endpoint = match self.api.parse_endpoint(&parts.method, parts.uri.path()) {
            Ok(endpoint) => endpoint,
            Err(problem) => return ("unmatched", Err(problem)),
        };
        let route = endpoint.route();
        let claims = if endpoint.requires_token() {
            let token = bearer_token(parts.headers.get(http::header::AUTHORIZATION).map(|v| v.as_bytes()));
            let verified = match token {
                Ok(token) => self.verifier.verify_fresh(token).await,
                Err(missing_or_malformed) => Err(missing_or_malformed),
            };
            match verified {
                Ok(claims) => Some(claims),
                Err(e) => return (route, Err(Problem::unauthorized(e.to_string()))),
            }
        } else {
            None
        };
        let request =
            Request { request_id, claims, headers: parts.headers, query: parts.uri.query().map(str::to_owned), body };
        let result = match tokio::time::timeout(REQUEST_TIMEOUT, self.api.handle(endpoint, request)).await {
            Ok(result) => result,
            Err(_) => Err(Problem::service_unavailable("the request took too long")),
        };
        (route, result)
    }
}

fn request_has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim() != "0")
}

/// Serves `app` on `listener` until `shutdown` fires, then lets in-flight requests
/// finish for at most `grace`.
pub async fn serve<A: Api>(listener: TcpListener, app: Arc<HttpApp<A>>, shutdown: CancellationToken, grace: Duration) {
    // The JWK Set (when keys come from one) is refreshed while the server serves.
    let keys_refresh = tokio::spawn(Arc::clone(&app.verifier).keep_keys_fresh());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |request| {
            let app = app.clone();
            async move { Ok::<_, std::convert::Infallible>(app.answer(request).await) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    keys_refresh.abort();
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(grace) => tracing::warn!(?grace, "grace period over, closing remaining connections"),
    }
}

/// Binds `addr`; port 0 picks a free port (tests).
pub async fn bind(addr: &str) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot bind {addr}: {e}"))?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// A token cancelled on SIGTERM or Ctrl-C.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler can be installed");
            tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown requested");
        trigger.cancel();
    });
    token
}

/// `endpoint`, which takes the `allowed` method only: any other is a 405 naming it.
pub fn only<E>(method: &Method, allowed: &'static str, endpoint: E) -> Result<E, Problem> {
    if method.as_str() == allowed {
        Ok(endpoint)
    } else {
        Err(Problem::method_not_allowed(allowed))
    }
}

/// Parses a path like `/tasks/{id}/complete` into its segments.
pub fn segments(path: &str) -> Vec<&str> {
    path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect()
}

/// Reads `key=value` pairs of a query string, percent-decoded.
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_are_decoded() {
        let pairs = query_pairs(Some("status=open&limit=5&cursor=a%2Bb&x"));
        assert_eq!(pairs[0], ("status".into(), "open".into()));
        assert_eq!(pairs[2], ("cursor".into(), "a+b".into()));
        assert_eq!(pairs[3], ("x".into(), "".into()));
        assert_eq!(query_pairs(Some("a=%zz%"))[0].1, "%zz%");
    }

    #[test]
    fn path_segments() {
        assert_eq!(segments("/tasks/abc/complete"), vec!["tasks", "abc", "complete"]);
        assert_eq!(segments("/tasks/"), vec!["tasks"]);
    }
}
