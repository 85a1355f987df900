//! The `ProxyHttp` implementation: each phase is short and hands the real work to the
//! module that owns it (`cors`, `auth`, `limits`, `routing`, `headers`, `problems`,
//! `metrics`, `access_log`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{Method, StatusCode};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};
use todo_common::auth::{Subject, TokenVerifier};
use todo_common::{request_id, Problem};

use crate::active_policy::ActivePolicy;
use crate::client_ip::ClientAddress;
use crate::ctx::RequestCtx;
use crate::headers::{self, LocalResponse, REQUEST_ID};
use crate::metrics::EdgeMetrics;
use crate::routing::{self, Lookup};
use crate::trace::{EdgeTracer, FinishedRequest};
use crate::{access_log, admin, auth, client_conn, cors, errors};

/// Connect attempts per request, over distinct addresses; only failures to connect
/// (nothing sent yet) are retried.
const MAX_CONNECT_ATTEMPTS: usize = 3;

/// Longest wait for the next piece of a request body (Pingora's default is 60 s); the
/// services give a whole body 10 s, so a stalled upload gets its 408 as soon.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Bounds on reading a refused body before closing (`refuse_body`).
const REFUSED_BODY_DRAIN_BYTES: usize = 8 * 1024 * 1024;
const REFUSED_BODY_DRAIN_TIME: Duration = Duration::from_secs(2);

pub struct EdgeProxy {
    live: Arc<ArcSwapOption<ActivePolicy>>,
    verifier: Arc<TokenVerifier>,
    verified: auth::VerifiedTokens,
    metrics: Arc<EdgeMetrics>,
    tracer: EdgeTracer,
    max_body_bytes: usize,
    refused_body_drain_time: Duration,
}

impl EdgeProxy {
    pub fn new(
        live: Arc<ArcSwapOption<ActivePolicy>>,
        verifier: Arc<TokenVerifier>,
        metrics: Arc<EdgeMetrics>,
        tracer: EdgeTracer,
        max_body_bytes: usize,
        head_timeout: Duration,
    ) -> Self {
        Self {
            live,
            verifier,
            verified: auth::VerifiedTokens::new(),
            metrics,
            tracer,
            max_body_bytes,
            // Body bytes that arrive after an answer start the next head for the client
            // connection layer: draining must end well before its head deadline.
            refused_body_drain_time: REFUSED_BODY_DRAIN_TIME.min(head_timeout / 2),
        }
    }

    async fn problem(&self, session: &mut Session, ctx: &RequestCtx, problem: Problem) -> Result<bool> {
        headers::respond(session, ctx, LocalResponse::problem(problem)).await?;
        Ok(true)
    }

    /// Answers `problem` (a 413) for a request body over the limit and ends the connection.
    /// With `drain`, what is left of the body is first read and dropped: closing a socket
    /// with unread input resets it, and a client still sending loses the answer it was sent
    /// (RFC 9112, 9.6). Bounded in bytes and time: a client sending more, or slower, gets
    /// the reset. Not on HTTP/2, where a refused stream ends alone and the connection goes on.
    async fn refuse_body(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        problem: Problem,
        drain: bool,
    ) -> Result<()> {
        session.set_keepalive(None);
        headers::respond(session, ctx, LocalResponse::problem(problem)).await?;
        ctx.answered_after = Some(ctx.started.elapsed());
        let downstream = session.as_downstream_mut();
        if !drain || downstream.is_http2() {
            return Ok(());
        }
        let drain = async {
            let mut left = REFUSED_BODY_DRAIN_BYTES;
            while let Ok(Some(chunk)) = downstream.read_request_body().await {
                let Some(still) = left.checked_sub(chunk.len()) else { break };
                left = still;
            }
        };
        // Ended by the body's end, an error or the timeout: the connection closes anyway.
        let _ = tokio::time::timeout(self.refused_body_drain_time, drain).await;
        Ok(())
    }

    async fn preflight(&self, session: &mut Session, ctx: &RequestCtx) -> Result<bool> {
        let mut resp = headers::local_header(&LocalResponse::empty(StatusCode::NO_CONTENT), ctx);
        if let (Some(cors), Some(_)) = (ctx.live.as_ref().and_then(|l| l.cors.as_ref()), &ctx.cors_origin) {
            cors::add_preflight_headers(&mut resp, cors, session.req_header())?;
        }
        session.write_response_header(Box::new(resp), true).await?;
        Ok(true)
    }
}

fn content_length(req: &RequestHeader) -> Option<u64> {
    req.headers.get(CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

#[async_trait]
impl ProxyHttp for EdgeProxy {
    /// Boxed: Pingora moves a request's future, which holds the context, twice per request
    /// (about 7 KB each time); a box moves as 8 bytes (BENCHMARKS.md, issue 17).
    type CTX = Box<RequestCtx>;

    /// No downstream modules: Pingora's default adds a response-compression module, switched
    /// off, whose context it still builds and calls on every request; the edge compresses
    /// nothing (the services answer small JSON bodies).
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    fn new_ctx(&self) -> Self::CTX {
        Box::new(RequestCtx::new())
    }

    async fn early_request_filter(&self, session: &mut Session, _ctx: &mut Self::CTX) -> Result<()> {
        client_conn::head_parsed(session);
        auth::hide_credentials(session.req_header_mut());
        session.as_downstream_mut().set_read_timeout(Some(BODY_READ_TIMEOUT));
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        let req = session.req_header();
        ctx.set_request_id(request_id::keep_or_make(req.headers.get(REQUEST_ID).map(|v| v.as_bytes())));
        ctx.trace = self.tracer.start(&req.headers);
        ctx.live = self.live.load_full();
        let trusted = ctx.live.as_ref().map_or(&[][..], |live| &live.trusted_proxies[..]);
        ctx.client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|peer| ClientAddress::resolve(peer.ip(), &req.headers, trusted));
        ctx.cors_origin = cors::allowed_origin(ctx.live.as_ref().and_then(|l| l.cors.as_ref()), req);
        let method = req.method.clone();
        let path = req.uri.path().to_owned();

        // Liveness only: readiness and metrics are the admin listener's (`admin`).
        if path == "/healthz" && (method == Method::GET || method == Method::HEAD) {
            ctx.label = "_healthz";
            headers::respond(session, ctx, admin::alive()).await?;
            return Ok(true);
        }
        // Before any token check: preflights carry no credentials.
        if cors::is_preflight(req) {
            ctx.label = "_preflight";
            return self.preflight(session, ctx).await;
        }
        let Some(live) = ctx.live.clone() else {
            ctx.label = "_no_policy";
            return self.problem(session, ctx, errors::no_policy()).await;
        };
        if routing::is_ambiguous_path(&path) {
            return self.problem(session, ctx, errors::ambiguous_path()).await;
        }
        let route = match routing::lookup(&live, &method, &path) {
            Lookup::Found(route) => route,
            Lookup::MethodNotAllowed(allowed) => {
                return self.problem(session, ctx, errors::method_not_allowed(&allowed)).await;
            }
            Lookup::NotFound => return self.problem(session, ctx, errors::no_route(&method, &path)).await,
        };
        ctx.route = Some(Arc::clone(&route));

        if let Some(declared) = content_length(session.req_header()).filter(|len| *len > self.max_body_bytes as u64) {
            // Refused before it is read; drained unless larger than the drain's bound, or
            // the client waits to be asked for it (`Expect`).
            let drain = declared <= REFUSED_BODY_DRAIN_BYTES as u64
                && !session.req_header().headers.contains_key(http::header::EXPECT);
            self.refuse_body(session, ctx, Problem::payload_too_large(self.max_body_bytes), drain).await?;
            return Ok(true);
        }
        if route.spec.auth {
            match auth::authenticated_subject(&self.verifier, &self.verified, session.req_header()).await {
                Ok(subject) => ctx.subject = Some(subject),
                Err(refusal) => {
                    self.metrics.unauthorized(refusal.reason());
                    return self.problem(session, ctx, Problem::unauthorized(refusal.to_string())).await;
                }
            }
        }
        if let Some(limiter) = &route.limiter {
            let decision = limiter.check_request(ctx.client.as_ref(), ctx.subject.as_ref().map(Subject::as_str)).await;
            ctx.limit = Some(decision);
            if !decision.allowed {
                self.metrics.rate_limited(&route.spec.name);
                return self.problem(session, ctx, errors::too_many_requests(decision.reset_seconds)).await;
            }
        }
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(chunk) = body {
            ctx.body_bytes += chunk.len();
            if ctx.body_bytes > self.max_body_bytes {
                return Err(Error::explain(ErrorType::HTTPStatus(413), "request body over the limit"));
            }
        }
        Ok(())
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Self::CTX) -> Result<Box<HttpPeer>> {
        let Some(route) = ctx.route.clone() else {
            return Err(Error::explain(ErrorType::HTTPStatus(500), "proxying without a route"));
        };
        let Some((backend, peer)) = route.pool.select(&ctx.tried).and_then(|b| route.pool.peer(&b).map(|p| (b, p)))
        else {
            return Err(Error::explain(
                ErrorType::HTTPStatus(503),
                format!("{} has no healthy address", route.pool.name()),
            ));
        };
        ctx.upstream_started.get_or_insert_with(Instant::now);
        ctx.upstream_addr = Some(backend.addr);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Nothing was sent: trying another address is safe, a bounded number of times.
        if let Some(addr) = ctx.upstream_addr.clone() {
            ctx.tried.push(addr);
        }
        let another = ctx.route.as_ref().is_some_and(|r| r.pool.select(&ctx.tried).is_some());
        if another && ctx.tried.len() < MAX_CONNECT_ATTEMPTS {
            e.set_retry(true);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let over_tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        headers::for_upstream(upstream_request, ctx, over_tls)
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        ctx.upstream_elapsed = ctx.upstream_started.map(|t| t.elapsed());
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        headers::finish(upstream_response, ctx)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Self::CTX) -> FailToProxy {
        let status = errors::status_for(e);
        if status > 0 && session.response_written().is_none() {
            let problem = errors::for_status(status, ctx.upstream_name(), self.max_body_bytes);
            let answered = if status == 413 {
                // Over the limit while streaming, without a declared length: the client is
                // sending the rest.
                self.refuse_body(session, ctx, problem, true).await
            } else {
                headers::respond(session, ctx, LocalResponse::problem(problem)).await
            };
            if let Err(write_error) = answered {
                tracing::debug!(error = %write_error, "could not send the error response");
            }
        }
        FailToProxy { error_code: status, can_reuse_downstream: false }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let elapsed = ctx.answered_after.unwrap_or_else(|| ctx.started.elapsed());
        match &ctx.route {
            Some(route) => {
                self.metrics.route_request(&route.metrics, &route.spec.name, status, elapsed);
                if let Some(upstream_elapsed) = ctx.upstream_elapsed {
                    self.metrics.route_upstream(&route.metrics, route.pool.name(), upstream_elapsed);
                }
            }
            None => self.metrics.request(ctx.label, status, elapsed),
        }
        access_log::record(session, ctx, status, elapsed, e);
        let req = session.req_header();
        let finished = FinishedRequest {
            method: req.method.as_str(),
            path: req.uri.path(),
            route: ctx.route_label(),
            status,
            upstream: ctx.upstream_name(),
            client_ip: ctx.client.as_ref().map(|c| c.ip),
            protocol: access_log::protocol(req.version),
        };
        self.tracer.finish(&ctx.trace, finished);
    }
}
