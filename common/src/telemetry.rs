//! Telemetry set up once per process: JSON lines on stdout, filtered by `RUST_LOG`
//! (default `info`), with the `log` crate (Pingora, lapin) bridged into `tracing`, and
//! the process's traces (`traces`): a line written inside a traced span carries its
//! `trace_id` and `span_id`.
//!
//! A request's thread formats its line and appends it to a shared buffer; a writer thread
//! takes the whole buffer every 50 ms (sooner once 64 KiB wait) and writes it in one
//! call. A direct write cost the edge a syscall per request, a channel with a thread
//! woken per line still about one.

use std::cell::RefCell;
use std::fmt::{self, Display};
use std::io::{self, Write};
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};
use tracing::dispatcher::WeakDispatch;
use tracing::{Dispatch, Event, Level, Subscriber};
use tracing_subscriber::filter::{filter_fn, LevelFilter};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::ProcessEnv;
use crate::traces::{TraceSettings, Tracing};

const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
const FLUSH_BYTES: usize = 64 * 1024;
/// The bound: past it, a logging thread waits for the writer (as a direct write to a slow
/// reader of stdout would) rather than dropping lines.
const MAX_BUFFERED_BYTES: usize = 4 * 1024 * 1024;

/// Keep until the process ends: dropping it writes out every buffered line.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    writer: Option<(Arc<LineBuffer>, JoinHandle<()>)>,
    tracing: Option<&'static Tracing>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        // Spans first: the last requests' spans leave before the process does.
        if let Some(tracing) = self.tracing.take() {
            tracing.shutdown();
        }
        if let Some((buffer, thread)) = self.writer.take() {
            buffer.close();
            let _ = thread.join();
        }
    }
}

/// The buffer `init` set up, for lines built by hand (`JsonLine`).
static LINES: OnceLock<Arc<LineBuffer>> = OnceLock::new();

/// Sets up logging and traces for the process `process_name` (the default service name
/// on exported spans). Keep the guard until the process ends.
pub fn init(process_name: &str) -> LogGuard {
    let settings = TraceSettings::from_env(&ProcessEnv, process_name);
    let tracing = match Tracing::install(&settings) {
        Ok(tracing) => Some(tracing),
        Err(error) => {
            // Traces are not worth refusing to start over; say why there are none.
            eprintln!("{process_name}: traces off: {error:#}");
            None
        }
    };
    let (queue, mut guard) = spawn_writer(Box::new(io::stdout()));
    guard.tracing = tracing;
    // `try_init` also installs the `log` bridge; it fails only if logging is already set up.
    match subscriber(queue.clone(), tracing).try_init() {
        Ok(()) => {
            let _ = LINES.set(queue.0);
            guard
        }
        Err(_) => LogGuard { writer: None, tracing },
    }
}

/// One log line built by hand, in the shape of the subscriber's lines, for a path that
/// logs on every request (the edge's access log): no field visitors, no span lookup.
/// Check `tracing::enabled!` first, so `RUST_LOG` still decides.
pub struct JsonLine {
    buf: Vec<u8>,
}

impl JsonLine {
    pub fn new(level: &str, target: &str, message: &str) -> Self {
        let mut line = Self { buf: Vec::with_capacity(512) };
        line.buf.extend_from_slice(b"{\"timestamp\":\"");
        push_timestamp(&mut line.buf, SystemTime::now());
        line.buf.push(b'"');
        line.field("level", level).field("target", target).field("message", message);
        line
    }

    fn key(&mut self, key: &str) {
        self.buf.extend_from_slice(b",\"");
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.extend_from_slice(b"\":");
    }

    /// A JSON value: a string (escaped) or a number.
    pub fn field(&mut self, key: &str, value: &(impl serde::Serialize + ?Sized)) -> &mut Self {
        self.key(key);
        let _ = serde_json::to_writer(&mut self.buf, value);
        self
    }

    /// A JSON string of what `value` displays, escaped, without an intermediate `String`.
    pub fn display(&mut self, key: &str, value: impl Display) -> &mut Self {
        use serde::Serializer;
        self.key(key);
        let _ = serde_json::Serializer::new(&mut self.buf).collect_str(&value);
        self
    }

    /// `ip`, or `ip:port`, as a JSON string.
    pub fn ip(&mut self, key: &str, ip: IpAddr, port: Option<u16>) -> &mut Self {
        self.key(key);
        self.buf.push(b'"');
        if let (IpAddr::V6(_), Some(_)) = (ip, port) {
            self.buf.push(b'[');
            push_ip(&mut self.buf, ip);
            self.buf.push(b']');
        } else {
            push_ip(&mut self.buf, ip);
        }
        if let Some(port) = port {
            self.buf.push(b':');
            self.buf.extend_from_slice(itoa::Buffer::new().format(port).as_bytes());
        }
        self.buf.push(b'"');
        self
    }

    /// Ends the line and queues it; written directly where `init` did not set up the
    /// writer (tests with `TEST_LOG`).
    pub fn write(mut self) {
        self.buf.extend_from_slice(b"}\n");
        match LINES.get() {
            Some(lines) => lines.append(&self.buf),
            None => {
                let _ = io::stdout().write_all(&self.buf);
            }
        }
    }

    #[cfg(test)]
    fn text(&self) -> &str {
        std::str::from_utf8(&self.buf).unwrap_or_default()
    }
}

/// Appends `ip` as text. An IPv4 address digit by digit: `Display` goes through the
/// formatting machinery, a few hundred instructions an address on the edge's
/// per-request path (BENCHMARKS.md, issue 17).
pub fn push_ip(buf: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf.push(b'.');
                }
                buf.extend_from_slice(digits.format(octet).as_bytes());
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(buf, "{v6}");
        }
    }
}

/// Appends `at` in RFC 3339 with microseconds, UTC (`2026-12-01T09:48:32.123456Z`), as
/// `chrono`'s `to_rfc3339_opts(Micros, true)` writes it; the date and time of day are
/// formatted once a second per thread, not on every line.
fn push_timestamp(buf: &mut Vec<u8>, at: SystemTime) {
    thread_local! {
        static SECOND: RefCell<(u64, Vec<u8>)> = const { RefCell::new((u64::MAX, Vec::new())) };
    }
    let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    SECOND.with_borrow_mut(|(cached, prefix)| {
        if *cached != seconds {
            let time = chrono::DateTime::<chrono::Utc>::from(UNIX_EPOCH + Duration::from_secs(seconds));
            prefix.clear();
            let _ = write!(prefix, "{}", time.format("%Y-%m-%dT%H:%M:%S."));
            *cached = seconds;
        }
        buf.extend_from_slice(prefix);
    });
    let mut digits = itoa::Buffer::new();
    let micros = digits.format(since_epoch.subsec_micros());
    buf.extend(std::iter::repeat_n(b'0', 6 - micros.len()));
    buf.extend_from_slice(micros.as_bytes());
    buf.push(b'Z');
}

/// JSON lines filtered by `RUST_LOG`, and (with `tracing`) the OpenTelemetry layer, which
/// sees spans only: `RUST_LOG=warn` must not switch traces off, and events need not be
/// copied into spans (the log lines carry the trace's ids instead).
fn subscriber<W>(writer: W, tracing: Option<&'static Tracing>) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::new(filter_directives(std::env::var("RUST_LOG").ok().as_deref()));
    let dispatch = OwnDispatch::default();
    let lines = tracing_subscriber::fmt::layer()
        .fmt_fields(JsonFields::new())
        .event_format(WithTraceIds {
            format: tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false),
            dispatch: dispatch.clone(),
        })
        .with_writer(writer)
        .with_filter(filter);
    let spans = tracing.map(|tracing| {
        tracing_opentelemetry::layer()
            .with_tracer(tracing.tracer())
            // The hint keeps the process's max level at what RUST_LOG asks for: without it,
            // every `log` call of Pingora's hot path (debug, trace) would reach the filters.
            .with_filter(
                filter_fn(|meta| meta.is_span() && *meta.level() <= Level::INFO).with_max_level_hint(Level::INFO),
            )
    });
    // It only listens for its registration: filtered off, it takes no part in any callsite's
    // interest or in the process's max level.
    tracing_subscriber::registry().with(lines).with(spans).with(dispatch.with_filter(LevelFilter::OFF))
}

/// Adds the `trace_id` and `span_id` of the span an event happened in to its JSON line.
struct WithTraceIds<F> {
    format: F,
    dispatch: OwnDispatch,
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let Some(ids) = ctx.lookup_current().and_then(|span| self.dispatch.trace_ids(&span.id())) else {
            return self.format.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.format.format_event(ctx, Writer::new(&mut line), event)?;
        match line.trim_end().strip_suffix('}') {
            Some(open) => writeln!(writer, "{open},\"trace_id\":\"{}\",\"span_id\":\"{}\"}}", ids.0, ids.1),
            None => writer.write_str(&line),
        }
    }
}

/// The subscriber's own dispatcher, for the formatter: inside an event, `tracing` answers
/// a lookup of the current dispatcher with none (no re-entry), so it is kept when the
/// subscriber is registered.
#[derive(Clone, Default)]
struct OwnDispatch(Arc<OnceLock<WeakDispatch>>);

impl OwnDispatch {
    fn trace_ids(&self, span: &tracing::span::Id) -> Option<(TraceId, SpanId)> {
        let dispatch = self.0.get()?.upgrade()?;
        let cx = tracing_opentelemetry::get_otel_context(span, &dispatch)?;
        let span = cx.span();
        let context = span.span_context();
        context.is_valid().then(|| (context.trace_id(), context.span_id()))
    }
}

impl<S: Subscriber> Layer<S> for OwnDispatch {
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.0.set(subscriber.downgrade());
    }
}

/// `RUST_LOG`'s directives (default `info`), with Pingora pinned to `info` unless they
/// name it: its debug lines print whole request headers, so `RUST_LOG=debug` for our own
/// code must not turn them on by accident.
fn filter_directives(rust_log: Option<&str>) -> String {
    let directives = rust_log.map(str::trim).filter(|d| !d.is_empty()).unwrap_or("info");
    if directives.contains("pingora") {
        directives.to_owned()
    } else {
        format!("{directives},pingora=info")
    }
}

/// For tests: silent unless `TEST_LOG` is set, then the same JSON lines, written directly
/// (a test process has no place to keep a guard).
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = subscriber(io::stdout, None).try_init();
    }
}

struct Pending {
    bytes: Vec<u8>,
    closing: bool,
}

struct LineBuffer {
    pending: Mutex<Pending>,
    /// The writer waits here for `FLUSH_BYTES`, closing or the interval.
    filled: Condvar,
    /// Loggers wait here while the buffer is at its bound.
    drained: Condvar,
}

impl LineBuffer {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn append(&self, line: &[u8]) {
        let mut pending = self.lock();
        while !pending.bytes.is_empty() && pending.bytes.len() + line.len() > MAX_BUFFERED_BYTES && !pending.closing {
            self.filled.notify_one();
            pending = self.drained.wait(pending).unwrap_or_else(PoisonError::into_inner);
        }
        let before = pending.bytes.len();
        pending.bytes.extend_from_slice(line);
        // Wake the writer once, when the threshold is crossed, not on every line after it.
        if before < FLUSH_BYTES && pending.bytes.len() >= FLUSH_BYTES {
            self.filled.notify_one();
        }
    }

    fn close(&self) {
        self.lock().closing = true;
        self.filled.notify_one();
    }

    fn run_writer(&self, mut out: Box<dyn Write + Send>) {
        let mut batch = Vec::with_capacity(FLUSH_BYTES);
        loop {
            let closing = {
                let mut pending = self.lock();
                if pending.bytes.len() < FLUSH_BYTES && !pending.closing {
                    pending =
                        self.filled.wait_timeout(pending, FLUSH_INTERVAL).unwrap_or_else(PoisonError::into_inner).0;
                }
                // Double buffering: the loggers go on with the emptied vector of the last batch.
                std::mem::swap(&mut batch, &mut pending.bytes);
                pending.closing
            };
            self.drained.notify_all();
            if !batch.is_empty() {
                // Nowhere to report a failed write of the log itself.
                let _ = out.write_all(&batch).and_then(|()| out.flush());
                batch.clear();
            }
            if closing {
                return;
            }
        }
    }
}

/// The `MakeWriter` of the subscriber: every line goes into the shared buffer.
#[derive(Clone)]
struct BufferedLines(Arc<LineBuffer>);

impl<'a> MakeWriter<'a> for BufferedLines {
    type Writer = &'a LineBuffer;

    fn make_writer(&'a self) -> Self::Writer {
        &self.0
    }
}

impl Write for &LineBuffer {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        self.append(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn spawn_writer(out: Box<dyn Write + Send>) -> (BufferedLines, LogGuard) {
    let buffer = Arc::new(LineBuffer {
        pending: Mutex::new(Pending { bytes: Vec::with_capacity(FLUSH_BYTES), closing: false }),
        filled: Condvar::new(),
        drained: Condvar::new(),
    });
    let for_thread = Arc::clone(&buffer);
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || for_thread.run_writer(out))
        .expect("the log writer thread starts");
    (BufferedLines(Arc::clone(&buffer)), LogGuard { writer: Some((buffer, thread)), tracing: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pingora_stays_at_info_unless_named() {
        assert_eq!(filter_directives(None), "info,pingora=info");
        assert_eq!(filter_directives(Some(" ")), "info,pingora=info");
        assert_eq!(filter_directives(Some("debug")), "debug,pingora=info");
        assert_eq!(filter_directives(Some("debug,pingora_proxy=debug")), "debug,pingora_proxy=debug");
    }

    /// A `Write` whose bytes the test can read.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_in_order_by_the_time_the_guard_drops() {
        let sink = Sink::default();
        let (lines, guard) = spawn_writer(Box::new(sink.clone()));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let lines = lines.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        lines.make_writer().write_all(format!("{t} {i}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        drop(guard);
        let written = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        for t in 0..4 {
            let seen: Vec<usize> = written
                .lines()
                .filter_map(|l| l.split_once(' ').filter(|(who, _)| *who == t.to_string()))
                .map(|(_, i)| i.parse().unwrap())
                .collect();
            assert_eq!(seen, (0..20_000).collect::<Vec<_>>(), "thread {t}");
        }
    }

    #[test]
    fn timestamps_and_addresses_are_written_as_the_formatting_machinery_writes_them() {
        for millis in [0u64, 1_700_000_000_123, 1_764_581_312_000, 1_764_581_312_999] {
            for extra_micros in [0u64, 7, 456] {
                let at = UNIX_EPOCH + Duration::from_micros(millis * 1000 + extra_micros);
                let mut buf = Vec::new();
                push_timestamp(&mut buf, at);
                let expected =
                    chrono::DateTime::<chrono::Utc>::from(at).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                assert_eq!(String::from_utf8(buf).unwrap(), expected);
            }
        }
        for ip in ["0.0.0.0", "127.0.0.1", "10.20.255.9", "::1", "2001:db8::7"] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut buf = Vec::new();
            push_ip(&mut buf, ip);
            assert_eq!(String::from_utf8(buf).unwrap(), ip.to_string());
            let mut line = JsonLine::new("INFO", "t", "m");
            line.ip("addr", ip, Some(8080));
            let value: serde_json::Value = serde_json::from_str(&format!("{}}}", line.text())).unwrap();
            assert_eq!(value["addr"], std::net::SocketAddr::new(ip, 8080).to_string());
        }
    }

    #[test]
    fn a_hand_built_line_is_json_with_everything_escaped() {
        let mut line = JsonLine::new("INFO", "edge::access", "request");
        line.field("path", "/a\"b\\c\n")
            .field("status", &200u16)
            .field("duration_ms", &1.5)
            .display("addr", "127.0.0.1:80");
        let value: serde_json::Value = serde_json::from_str(&format!("{}}}", line.text())).unwrap();
        assert_eq!(value["path"], "/a\"b\\c\n");
        assert_eq!(value["status"], 200);
        assert_eq!(value["duration_ms"], 1.5);
        assert_eq!(value["addr"], "127.0.0.1:80");
        assert_eq!(value["level"], "INFO");
        assert_eq!(value["target"], "edge::access");
        let timestamp = value["timestamp"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(timestamp).is_ok(), "{timestamp}");
    }

    #[test]
    fn a_line_written_inside_a_traced_span_carries_its_ids() {
        let sink = Sink::default();
        let settings = TraceSettings { exporting: false, service_name: "test".into(), queue_capacity: 16 };
        let tracing: &'static Tracing = Box::leak(Box::new(Tracing::build(&settings).unwrap()));
        let writer = {
            let sink = sink.clone();
            move || sink.clone()
        };
        let traceparent = tracing::subscriber::with_default(subscriber(writer, Some(tracing)), || {
            tracing::info!("before");
            let span = tracing::info_span!("request", request_id = "r-1");
            let traceparent = span.in_scope(|| {
                tracing::info!(answer = 42, "inside");
                crate::traces::current_traceparent()
            });
            tracing::info!("after");
            traceparent.expect("the span has a trace context")
        });
        let written = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = written.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 3, "{written}");
        let inside = &lines[1];
        let (trace_id, span_id) = (&traceparent[3..35], &traceparent[36..52]);
        assert_eq!(inside["trace_id"], trace_id, "{inside}");
        assert_eq!(inside["span_id"], span_id, "{inside}");
        assert_eq!((inside["answer"].as_i64(), inside["span"]["request_id"].as_str()), (Some(42), Some("r-1")));
        for outside in [&lines[0], &lines[2]] {
            assert!(outside.get("trace_id").is_none(), "{outside}");
        }
    }

    #[test]
    fn lines_are_written_without_waiting_for_the_end() {
        let sink = Sink::default();
        let (lines, _guard) = spawn_writer(Box::new(sink.clone()));
        lines.make_writer().write_all(b"one line\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sink.0.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "the line was never written");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(sink.0.lock().unwrap().as_slice(), b"one line\n");
    }
}
