//! Logging set up once per process: JSON lines on stdout, filtered by `RUST_LOG`
//! (default `info`), with the `log` crate (Pingora, lapin) bridged into `tracing`.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // `try_init` also installs the `log` bridge; a second call (tests) is a no-op.
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_env_filter(filter)
        .try_init();
}

/// For tests: silent unless `TEST_LOG` is set, then the same JSON lines.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        init();
    }
}
