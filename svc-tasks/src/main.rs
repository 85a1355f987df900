use std::process::ExitCode;

use svc_tasks::config::{help, Config};

fn main() -> ExitCode {
    todo_common::cli::main("svc-tasks", help, Config::from_env, svc_tasks::run)
}
