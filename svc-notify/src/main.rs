use std::process::ExitCode;

use svc_notify::Config;

fn main() -> ExitCode {
    todo_common::cli::main("svc-notify", Config::help, Config::from_env, svc_notify::run)
}
