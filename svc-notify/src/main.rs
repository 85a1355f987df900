use std::process::ExitCode;

use svc_notify::config::{Config, LISTEN_ADDR};

fn main() -> ExitCode {
    let migrate = std::env::args().any(|a| a == "--migrate-to-quorum");
    todo_common::cli::main("svc-notify", &LISTEN_ADDR, Config::help, Config::from_env, |config| async move {
        if migrate {
            svc_notify::migrate_to_quorum(config).await
        } else {
            svc_notify::run(config).await
        }
    })
}
