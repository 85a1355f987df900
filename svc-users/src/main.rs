use std::process::ExitCode;

use svc_users::Config;
use todo_common::config::{help_requested, ProcessEnv};

fn main() -> ExitCode {
    if help_requested() {
        print!("{}", Config::help());
        return ExitCode::SUCCESS;
    }
    let config = match Config::from_env(&ProcessEnv) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("svc-users: {e}");
            return ExitCode::FAILURE;
        }
    };
    todo_common::telemetry::init();
    let seed_only = std::env::args().any(|a| a == "--seed");
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime starts");
    let result = runtime.block_on(async {
        if seed_only {
            let created = svc_users::seed::seed(&config).await?;
            tracing::info!(created, "demo users seeded");
            Ok(())
        } else {
            svc_users::run(config).await
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "svc-users stopped");
            ExitCode::FAILURE
        }
    }
}
