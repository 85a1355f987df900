//! A layer around every client connection, under Pingora's HTTP/1 parser.
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

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Buf, Bytes};
use http::StatusCode;
use pingora::apps::ServerApp;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream, TimingDigest,
    UniqueID, UniqueIDType,
};
use pingora::proxy::Session;
use pingora::server::ShutdownWatch;
use todo_common::{request_id, Problem};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::headers::{REQUEST_ID, SECURITY_HEADERS};
use crate::metrics::EdgeMetrics;

/// What every connection's layer shares.
pub struct Layer {
    head_timeout: Duration,
    metrics: Arc<EdgeMetrics>,
}

impl Layer {
    pub fn new(head_timeout: Duration, metrics: Arc<EdgeMetrics>) -> Arc<Self> {
        Arc::new(Self { head_timeout, metrics })
    }
}

/// A Pingora app (the HTTP proxy) whose client connections all pass through the layer.
pub struct Layered<A> {
    app: Arc<A>,
    layer: Arc<Layer>,
}

impl<A> Layered<A> {
    pub fn new(app: A, layer: Arc<Layer>) -> Self {
        Self { app: Arc::new(app), layer }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Layered<A> {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let stream: Stream = Box::new(ClientConn::new(stream, Arc::clone(&self.layer)));
        self.app.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
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
    layer: Arc<Layer>,
    phase: Phase,
    /// Set by the proxy (through a shared reference), taken by the next poll.
    head_parsed: AtomicBool,
    /// The head deadline's timer, armed only while a read waits in the `Head` phase.
    timer: Option<Pin<Box<Sleep>>>,
    /// The edge's own answer, while (part of) it is still to be written.
    answer: Bytes,
}

impl ClientConn {
    fn new(inner: Stream, layer: Arc<Layer>) -> Self {
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
        self.answer(StatusCode::REQUEST_TIMEOUT);
        Poll::Ready(())
    }

    fn answer(&mut self, status: StatusCode) {
        let timeout = self.layer.head_timeout;
        let (label, problem, took) = match status {
            StatusCode::REQUEST_TIMEOUT => ("_head_timeout", head_timeout_problem(timeout), timeout),
            StatusCode::METHOD_NOT_ALLOWED => ("_unparsable", crate::problems::connect_not_supported(), Duration::ZERO),
            _ => ("_unparsable", Problem::bad_request("the request is not valid HTTP/1.1"), Duration::ZERO),
        };
        self.layer.metrics.request(label, problem.status, took);
        tracing::info!(target: "edge::access", route = label, status = problem.status, "request refused before parsing");
        self.answer = Bytes::from(answer_bytes(&problem));
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

/// The whole HTTP/1.1 answer: the same security headers as every other answer, a fresh
/// request id, and the end of the connection.
fn answer_bytes(problem: &Problem) -> Vec<u8> {
    let body = problem.to_body();
    let status = problem.status();
    let mut out = Vec::with_capacity(1024 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    let length = body.len().to_string();
    let id = request_id::keep_or_make(None);
    let fixed = [
        ("content-type", todo_common::problem::CONTENT_TYPE),
        ("content-length", length.as_str()),
        ("connection", "close"),
        (REQUEST_ID, id.as_str()),
    ];
    for (name, value) in fixed.iter().chain(SECURITY_HEADERS) {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(&body);
    out
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
                let status = status_of(buf).and_then(|s| StatusCode::from_u16(s).ok());
                this.answer(status.unwrap_or(StatusCode::BAD_REQUEST));
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
        let this = self.get_mut();
        ready!(this.poll_send_answer(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
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
        let answer = answer_bytes(&Problem::bad_request("bad"));
        let text = String::from_utf8(answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())), "{head}");
        assert!(head.contains("\r\nconnection: close\r\n") && head.contains("\r\nx-frame-options: SAMEORIGIN"));
        assert_eq!(serde_json::from_str::<serde_json::Value>(body).unwrap()["status"], 400);
    }
}
