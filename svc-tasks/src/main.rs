use std::process::ExitCode;

use svc_tasks::config::{help, Config, LISTEN_ADDR};

fn main() -> ExitCode {
    todo_common::cli::main("svc-tasks", &LISTEN_ADDR, help, Config::from_env, svc_tasks::run)
}
