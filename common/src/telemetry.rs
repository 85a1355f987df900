//! Logging set up once per process: JSON lines on stdout, filtered by `RUST_LOG`
//! (default `info`), with the `log` crate (Pingora, lapin) bridged into `tracing`.
//!
//! A request's thread only formats its line and queues it; a writer thread empties the
//! queue into stdout in batches, one write per batch instead of one per line.

use std::io::{BufWriter, Stdout};

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Lines waiting for the writer thread. When the reader of stdout falls this far behind,
/// logging waits for it (as a direct write would) rather than dropping lines.
const QUEUED_LINES: usize = 8192;
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// Keep until the process ends: dropping it writes out every queued line.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    _writer: Option<WorkerGuard>,
}

pub fn init() -> LogGuard {
    let stdout: BufWriter<Stdout> = BufWriter::with_capacity(WRITE_BATCH_BYTES, std::io::stdout());
    let (writer, guard) = NonBlockingBuilder::default()
        .buffered_lines_limit(QUEUED_LINES)
        .lossy(false)
        .thread_name("log-writer")
        .finish(stdout);
    // `try_init` also installs the `log` bridge; it fails only if logging is already set up.
    let installed = subscriber().with_writer(writer).try_init().is_ok();
    LogGuard { _writer: installed.then_some(guard) }
}

fn subscriber() -> tracing_subscriber::fmt::SubscriberBuilder<
    tracing_subscriber::fmt::format::JsonFields,
    tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Json>,
    EnvFilter,
> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_env_filter(filter)
}

/// For tests: silent unless `TEST_LOG` is set, then the same JSON lines, written directly
/// (a test process has no place to keep a guard).
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = subscriber().try_init();
    }
}
