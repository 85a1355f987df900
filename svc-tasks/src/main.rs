use std::process::ExitCode;

use svc_tasks::config::{help, Config};
use todo_common::config::{help_requested, ProcessEnv};

fn main() -> ExitCode {
    if help_requested() {
        print!("{}", help());
        return ExitCode::SUCCESS;
    }
    let config = match Config::from_env(&ProcessEnv) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("svc-tasks: {error}");
            return ExitCode::FAILURE;
        }
    };
    todo_common::telemetry::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("svc-tasks: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(svc_tasks::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "svc-tasks failed");
            ExitCode::FAILURE
        }
    }
}
