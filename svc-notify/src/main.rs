use std::process::ExitCode;

use svc_notify::config::{Config, LISTEN_ADDR};

fn main() -> ExitCode {
    todo_common::cli::main("svc-notify", &LISTEN_ADDR, Config::help, Config::from_env, svc_notify::run)
}
