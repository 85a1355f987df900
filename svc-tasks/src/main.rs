use std::process::ExitCode;

use svc_tasks::config::{Config, LISTEN_ADDR};

fn main() -> ExitCode {
    todo_common::cli::main("svc-tasks", &LISTEN_ADDR, Config::help, Config::from_env, svc_tasks::run)
}
