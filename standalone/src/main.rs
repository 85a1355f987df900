//! `todo-standalone`: the whole to-do system in one process, nothing else installed.
//!
//! The three services run on embedded backends (redb files, an in-process list cache,
//! an in-process event bus from svc-tasks' outbox to svc-notify) on a runtime in a
//! background thread; the edge (Pingora) runs in the main thread with the shipped
//! policies and a generated `upstreams.toml`. Data and the generated token signing key
//! live in `TODO_DATA_DIR`, so both survive a restart. Ctrl-C (or SIGTERM) stops the
//! edge, then the services.
#![forbid(unsafe_code)]

mod data_dir;
mod policies;
mod services;
mod settings;
mod signing_key;

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::Context;
use todo_common::config::help_requested;

use crate::services::{service_env, ServiceConfigs, TokenEnv};
use crate::settings::Settings;

/// Shorter than the services' default: a local tool should stop promptly on SIGTERM.
const DEFAULT_SHUTDOWN_GRACE_SECONDS: &str = "2";
const DEFAULT_EDGE_THREADS: &str = "2";

fn main() -> ExitCode {
    if help_requested() {
        print!("{}", Settings::help());
        return ExitCode::SUCCESS;
    }
    if todo_common::probe::requested() {
        let admin = &edge::config::EDGE_ADMIN_ADDR;
        return todo_common::probe::main("todo-standalone", admin, &todo_common::config::ProcessEnv);
    }
    let process_env: HashMap<String, String> = std::env::vars().collect();
    let settings = match Settings::from_env(&process_env) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("todo-standalone: {error}");
            return ExitCode::FAILURE;
        }
    };
    if std::env::var_os("RUST_LOG").is_none() {
        // Quiet by default, so the banner stays readable; RUST_LOG=info shows every request.
        std::env::set_var("RUST_LOG", "warn");
    }
    let _telemetry = todo_common::telemetry::init("todo-standalone");
    match run(settings, process_env) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("todo-standalone: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(settings: Settings, mut base_env: HashMap<String, String>) -> anyhow::Result<()> {
    let data_dir = data_dir::prepare(&settings.data_dir)?;
    println!("todo-standalone: data in {}", data_dir.display());
    let signing_key = data_dir.join("jwt-signing.pem");
    signing_key::load_or_create(&signing_key)?;
    let tokens = TokenEnv { signing_key, users_addr: settings.users_addr.clone() };

    base_env.entry("SHUTDOWN_GRACE_SECONDS".into()).or_insert_with(|| DEFAULT_SHUTDOWN_GRACE_SECONDS.into());
    let configs = ServiceConfigs {
        users: svc_users::Config::from_env(&service_env(&base_env, &settings.users_addr, tokens.issuer()))
            .context("svc-users settings")?,
        tasks: svc_tasks::Config::from_env(&service_env(&base_env, &settings.tasks_addr, tokens.verifier()))
            .context("svc-tasks settings")?,
        notify: svc_notify::Config::from_env(&service_env(&base_env, &settings.notify_addr, tokens.verifier()))
            .context("svc-notify settings")?,
    };
    let services = services::start(configs, &data_dir)?;
    let addresses = &services.addresses;

    let policy_dir = policies::write(
        &data_dir,
        &settings.policy_dir,
        &policies::Upstreams { users: addresses.users, tasks: addresses.tasks, notify: addresses.notify },
    )?;
    let tokens = TokenEnv { users_addr: addresses.users.to_string(), ..tokens };
    let mut edge_env = service_env(&base_env, &settings.listen_addr.to_string(), tokens.verifier());
    edge_env.insert("POLICY_DIR".into(), policy_dir.display().to_string());
    edge_env.entry("EDGE_THREADS".into()).or_insert_with(|| DEFAULT_EDGE_THREADS.into());
    let edge_config = edge::Config::from_env(&edge_env).context("edge settings")?;

    print_banner(&edge_config, addresses);
    let served = edge::run(edge_config);
    println!("todo-standalone: stopping");
    services.stop();
    served
}

fn print_banner(edge: &edge::Config, addresses: &services::Addresses) {
    let (api, curl) = match &edge.tls {
        Some(files) => (format!("https://{}", edge.listen_addr), format!("curl --cacert {}", files.cert.display())),
        None => (format!("http://{}", edge.listen_addr), "curl".to_owned()),
    };
    let admin = edge.admin_addr;
    let seeded = if addresses.seeded > 0 { " (created now)" } else { "" };
    let demo: Vec<String> =
        svc_users::seed::DEMO_USERS.iter().map(|(email, password, _)| format!("{email} / {password}")).collect();
    println!(
        "todo-standalone: the API is on {api}\n\
         \x20 metrics and readiness: http://{admin}/metrics, http://{admin}/readyz\n\
         \x20 services: users {} · tasks {} · notify {}\n\
         \x20 demo users{seeded}: {}\n\
         \x20 try it (needs curl and jq):\n\
         \x20   TOKEN=$({curl} -s -X POST {api}/users/login -H 'content-type: application/json' \\\n\
         \x20          -d '{{\"email\":\"alice@example.com\",\"password\":\"alice-demo-password\"}}' | jq -r .accessToken)\n\
         \x20   {curl} -s -X POST {api}/tasks -H \"authorization: Bearer $TOKEN\" \\\n\
         \x20          -H 'content-type: application/json' -d '{{\"title\":\"Buy milk\"}}'\n\
         \x20   {curl} -s {api}/tasks -H \"authorization: Bearer $TOKEN\"\n\
         \x20 Ctrl-C stops it; data and tokens survive a restart.",
        addresses.users,
        addresses.tasks,
        addresses.notify,
        demo.join(", "),
    );
}
