use std::process::ExitCode;

use svc_users::Config;

fn main() -> ExitCode {
    let seed_only = std::env::args().any(|a| a == "--seed");
    todo_common::cli::main("svc-users", Config::help, Config::from_env, |config| async move {
        if seed_only {
            let created = svc_users::seed::seed(&config).await?;
            tracing::info!(created, "demo users seeded");
            Ok(())
        } else {
            svc_users::run(config).await
        }
    })
}
