//! A layer around every HTTP/1 client connection, under Pingora's HTTP/1 parser (and above
//! TLS, when the listener speaks it).
//!
//! Pingora 0.9 leaves two things to the application without giving it a phase for them:
//! - **A deadline for the request head.** Its read timeout applies to each read, so a
//!   client sending the request line and headers a byte at a time (slowloris) holds a
//!   connection as long as it likes. Here a head must be complete within `head_timeout`
//!   of its first byte; otherwise the client gets a 408 and the connection ends.
//! - **Its own answers.** A request it cannot parse gets a bare 400 (and `CONNECT` a 405),
//!   written before any `ProxyHttp` phase runs: no problem+json, no security headers,
//!   `Server: Pingora`. Such an answer is replaced on its way out by the edge's own.
//!
//! The proxy tells the layer when it has a request head ([`head_parsed`], called from
//! `early_request_filter`). Bytes read after the previous response started begin the
//! next head; a response written before the proxy saw a head is one of Pingora's own.
//!
//! The layer also delays Pingora's closing of idle keep-alive connections at SIGTERM
//! (`cleanup`) by a drain period: a client that sends its next request on one meanwhile
//! gets an answer with `Connection: close` instead of a reset connection, which it could
//! not safely retry for a POST.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::CONNECTION;
use http::HeaderValue;
use pingora::apps::ServerApp;
use pingora::http::ResponseHeader;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream, TimingDigest,
    UniqueID, UniqueIDType, ALPN,
};
use pingora::proxy::Session;
use pingora::server::ShutdownWatch;
use todo_common::{request_id, Problem};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::access_log;
use crate::ctx::RequestCtx;
use crate::headers::{self, LocalResponse};
use crate::metrics::EdgeMetrics;

/// What every connection's layer shares.
pub struct ClientConnSettings {
    head_timeout: Duration,
    /// After SIGTERM, how long idle keep-alive connections stay open for a last request.
    idle_drain: Duration,
    metrics: Arc<EdgeMetrics>,
}

impl ClientConnSettings {
    pub fn new(head_timeout: Duration, idle_drain: Duration, metrics: Arc<EdgeMetrics>) -> Arc<Self> {
        Arc::new(Self { head_timeout, idle_drain, metrics })
    }
}

/// A Pingora app (the HTTP proxy) whose client connections all pass through the layer.
pub struct ClientConnApp<A> {
    app: Arc<A>,
    layer: Arc<ClientConnSettings>,
}

impl<A> ClientConnApp<A> {
    pub fn new(app: A, layer: Arc<ClientConnSettings>) -> Self {
        Self { app: Arc::new(app), layer }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for ClientConnApp<A> {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        // HTTP/2 (chosen by ALPN over TLS) frames its own requests and answers, and the h2
        // crate bounds them: the layer only reads and writes HTTP/1.
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return self.app.process_new(stream, shutdown).await;
        }
        let stream: Stream = Box::new(ClientConn::new(stream, Arc::clone(&self.layer)));
        self.app.process_new(stream, shutdown).await
    }

    /// Runs once the listener is closed: requests still arriving on open connections are
    /// answered (with `Connection: close`) for `idle_drain`, then the idle ones are closed.
    async fn cleanup(&self) {
        tokio::time::sleep(self.layer.idle_drain).await;
        self.app.cleanup().await;
    }
}

/// Tells the connection's layer that the proxy has a request head; called first thing in
/// `early_request_filter`.
pub fn head_parsed(session: &Session) {
    let conn = session.as_downstream().stream().and_then(|stream| stream.as_any().downcast_ref::<ClientConn>());
    if let Some(conn) = conn {
        conn.head_parsed.store(true, Ordering::Relaxed);
    }
}

enum Phase {
    /// Nothing of the first request has arrived yet.
    Idle,
    /// Bytes of a request head are arriving; it must be complete by `deadline`.
    Head { deadline: Instant },
    /// The proxy has the head: body, upstream and response are Pingora's business.
    /// `responded` once a final (non-1xx) response has started.
    Request { responded: bool },
    /// The edge's own answer replaced Pingora's: reads see the end, writes vanish.
    Answered,
}

pub struct ClientConn {
    inner: Stream,
    layer: Arc<ClientConnSettings>,
    phase: Phase,
    /// Set by the proxy (through a shared reference), taken by the next poll.
    head_parsed: AtomicBool,
    /// The head deadline's timer, armed only while a read waits in the `Head` phase.
    timer: Option<Pin<Box<Sleep>>>,
    /// The edge's own answer, while (part of) it is still to be written.
    answer: Bytes,
}

impl ClientConn {
    fn new(inner: Stream, layer: Arc<ClientConnSettings>) -> Self {
        Self {
            inner,
            layer,
            phase: Phase::Idle,
            head_parsed: AtomicBool::new(false),
            timer: None,
            answer: Bytes::new(),
        }
    }

    fn take_head_parsed(&mut self) {
        if self.head_parsed.swap(false, Ordering::Relaxed) {
            self.phase = Phase::Request { responded: false };
        }
    }

    fn bytes_arrived(&mut self) {
        if matches!(self.phase, Phase::Idle | Phase::Request { responded: true }) {
            self.phase = Phase::Head { deadline: Instant::now() + self.layer.head_timeout };
        }
    }

    /// Pending until the head deadline passes (if a head is being read); then queues the 408.
    fn poll_head_deadline(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Phase::Head { deadline } = self.phase else { return Poll::Pending };
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        ready!(timer.as_mut().poll(cx));
        let timeout = self.layer.head_timeout;
        self.answer("_head_timeout", head_timeout_problem(timeout), timeout);
        Poll::Ready(())
    }

    /// Queues the edge's own answer for a request no proxy phase saw, counted and logged
    /// like every other answer.
    fn answer(&mut self, label: &'static str, problem: Problem, elapsed: Duration) {
        let mut ctx = RequestCtx::new();
        ctx.label = label;
        ctx.set_request_id(request_id::keep_or_make(None));
        let status = problem.status;
        self.answer = match answer_bytes(problem, &ctx) {
            Ok(bytes) => Bytes::from(bytes),
            Err(error) => {
                tracing::error!(%error, "cannot build the edge's own answer");
                Bytes::new()
            }
        };
        self.layer.metrics.request(label, status, elapsed);
        access_log::record_refused(&ctx, status, elapsed);
        self.phase = Phase::Answered;
    }

    /// Writes what is left of the edge's own answer, then flushes.
    fn poll_send_answer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.answer.is_empty() {
            let written = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.answer))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.answer.advance(written);
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }
}

fn head_timeout_problem(timeout: Duration) -> Problem {
    let mut problem = Problem::request_timeout();
    problem.detail = format!("the request line and headers did not arrive within {} s", timeout.as_secs_f64());
    problem
}

/// What Pingora answers on its own before any phase: 405 for `CONNECT`, else 400 for a
/// request it cannot parse.
fn problem_for_pingora_answer(status: Option<u16>) -> Problem {
    match status {
        Some(405) => crate::errors::connect_not_supported(),
        _ => Problem::bad_request("the request is not valid HTTP/1.1"),
    }
}

/// The whole answer on the wire, finished by the helper every other answer goes through
/// (security headers, request id), and ending the connection.
fn answer_bytes(problem: Problem, ctx: &RequestCtx) -> pingora::Result<Vec<u8>> {
    let mut response = LocalResponse::problem(problem);
    response.headers.push((CONNECTION, HeaderValue::from_static("close")));
    let head = headers::local_header(&response, ctx);
    Ok(wire_bytes(&head, &response.body))
}

/// An HTTP/1.1 response on the wire: status line, the head's headers, then the body.
fn wire_bytes(head: &ResponseHeader, body: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::with_capacity(1024 + body.len());
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(head.status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(head.status.canonical_reason().unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
    head.header_to_h1_wire(&mut out);
    out.put_slice(b"\r\n");
    out.put_slice(body);
    out.to_vec()
}

/// The status of the response whose head starts `buf` (Pingora writes a head in one go).
fn status_of(buf: &[u8]) -> Option<u16> {
    let code = buf.strip_prefix(b"HTTP/1.")?.get(2..5)?;
    std::str::from_utf8(code).ok()?.parse().ok()
}

impl AsyncRead for ClientConn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.take_head_parsed();
        if matches!(this.phase, Phase::Answered) {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.bytes_arrived();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                ready!(this.poll_head_deadline(cx));
                // Best effort now; Pingora shuts the stream down after this error, which
                // finishes the answer.
                let _ = this.poll_send_answer(cx);
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "request head not complete in time")))
            }
            failed => failed,
        }
    }
}

impl AsyncWrite for ClientConn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.take_head_parsed();
        match &mut this.phase {
            Phase::Request { responded } => {
                // A 1xx (100 Continue relayed from the upstream) is followed by more body.
                if !*responded && status_of(buf).is_some_and(|s| s >= 200) {
                    *responded = true;
                }
                Pin::new(&mut this.inner).poll_write(cx, buf)
            }
            Phase::Idle | Phase::Head { .. } => {
                // No head reached the proxy: this is Pingora answering on its own.
                this.answer("_unparsable", problem_for_pingora_answer(status_of(buf)), Duration::ZERO);
                ready!(this.poll_send_answer(cx))?;
                Poll::Ready(Ok(buf.len()))
            }
            Phase::Answered => {
                ready!(this.poll_send_answer(cx))?;
                Poll::Ready(Ok(buf.len()))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Writes what is left of an answer of the edge's own, then flushes.
        self.get_mut().poll_send_answer(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_answer(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for ClientConn {
    async fn shutdown(&mut self) {
        if !self.answer.is_empty() {
            let answer = std::mem::take(&mut self.answer);
            let _ = self.inner.write_all(&answer).await;
        }
        Shutdown::shutdown(&mut *self.inner).await;
    }
}

impl UniqueID for ClientConn {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for ClientConn {
    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<pingora::protocols::ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for ClientConn {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for ClientConn {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for ClientConn {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for ClientConn {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

impl std::fmt::Debug for ClientConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConn").field("inner", &self.inner).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_status_of_a_response_head() {
        assert_eq!(status_of(b"HTTP/1.1 400 Bad Request\r\n"), Some(400));
        assert_eq!(status_of(b"HTTP/1.0 100 Continue\r\n"), Some(100));
        assert_eq!(status_of(b"{\"body\": 1}"), None);
        assert_eq!(status_of(b"HTTP/1.1 4"), None);
    }

    #[test]
    fn the_own_answer_is_a_complete_problem_that_ends_the_connection() {
        let mut ctx = RequestCtx::new();
        ctx.request_id = HeaderValue::from_static("req-1");
        let answer = answer_bytes(problem_for_pingora_answer(Some(400)), &ctx).unwrap();
        let text = String::from_utf8(answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        // Header names are case-insensitive; Pingora writes the ones it knows title-cased.
        let head = head.to_ascii_lowercase();
        assert!(head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())), "{head}");
        assert!(
            head.contains("\r\nconnection: close\r\n") && head.contains("\r\nx-frame-options: sameorigin"),
            "{head}"
        );
        assert!(head.lines().any(|line| line == "x-request-id: req-1"), "{head}");
        assert_eq!(serde_json::from_str::<serde_json::Value>(body).unwrap()["status"], 400);
    }
}
