use std::process::ExitCode;

use svc_notify::Config;
use todo_common::config::{help_requested, ProcessEnv};

fn main() -> ExitCode {
    if help_requested() {
        print!("{}", Config::help());
        return ExitCode::SUCCESS;
    }
    let config = match Config::from_env(&ProcessEnv) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("svc-notify: {e}");
            return ExitCode::FAILURE;
        }
    };
    todo_common::telemetry::init();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime starts");
    match runtime.block_on(svc_notify::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "svc-notify stopped");
            ExitCode::FAILURE
        }
    }
}
