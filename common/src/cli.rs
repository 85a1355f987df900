//! The life of a service binary, the same for each: `--help`, `--probe` (the container
//! health check), configuration read once (all problems reported, exit 1), telemetry, a
//! runtime, then the service's `run`.

use std::future::Future;
use std::process::ExitCode;

use crate::config::{help_requested, ConfigError, EnvSource, ProcessEnv, Var};

pub fn main<C, Fut>(
    binary: &str,
    listen: &Var,
    help: impl FnOnce() -> String,
    from_env: impl FnOnce(&dyn EnvSource) -> Result<C, ConfigError>,
    run: impl FnOnce(C) -> Fut,
) -> ExitCode
where
    Fut: Future<Output = anyhow::Result<()>>,
{
    if help_requested() {
        print!("{}", help());
        return ExitCode::SUCCESS;
    }
    if crate::probe::requested() {
        return crate::probe::main(binary, listen, &ProcessEnv);
    }
    let config = match from_env(&ProcessEnv) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{binary}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let _telemetry = crate::telemetry::init(binary);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{binary}: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "{binary} stopped");
            ExitCode::FAILURE
        }
    }
}
