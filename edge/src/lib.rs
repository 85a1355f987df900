//! The edge: the system's public entry point, a Pingora proxy that routes requests to
//! the services by an operator-edited policy (`POLICY_DIR/*.toml`, hot-reloaded), checks
//! bearer tokens on protected routes, answers CORS preflights, applies per-address and
//! per-user rate limits (per replica, or shared through Redis), adds security headers to every response, and balances over
//! health-checked upstream addresses.
//!
//! `run` composes the Pingora server: the proxy service on `LISTEN_ADDR` (plain HTTP, or
//! TLS with HTTP/2 when `EDGE_TLS_CERT`/`EDGE_TLS_KEY` are set), the admin listener on
//! `EDGE_ADMIN_ADDR`, and the policy watcher, upstream health checks, token keys refresh
//! and certificate watcher as background services.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod active_policy;
pub mod admin;
pub mod auth;
pub mod client_conn;
pub mod client_ip;
pub mod config;
pub mod cors;
pub mod ctx;
pub mod errors;
pub mod headers;
pub mod health_checks;
pub mod limits;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod routing;
pub mod security_headers;
pub mod tls;
pub mod trace;
pub mod upstreams;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwapOption;
use pingora::apps::HttpServerOptions;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use todo_common::auth::TokenVerifier;

pub use config::Config;

use crate::limits::shared::SharedStore;
use crate::metrics::EdgeMetrics;
use crate::policy::{Capabilities, Policy, PolicyErrors};
use crate::reload::{Outcome, PolicyWatcher, Reloader};

/// Upper bound on connect retries Pingora may make for one request (we stop earlier).
const MAX_RETRIES: usize = 4;

/// Validates a policy directory without starting anything (`edge --check-policies DIR`),
/// for an edge with `capabilities` (see [`Config::policy_capabilities`]).
pub fn check_policies(dir: &Path, capabilities: Capabilities) -> Result<Policy, PolicyErrors> {
    policy::load_dir(dir, capabilities)
}

fn server_conf(config: &Config) -> ServerConf {
    ServerConf {
        threads: config.threads,
        // One runtime per thread, each serving the connections it accepted (as nginx's
        // workers do): no cross-thread task queues or wake-ups on the request path.
        work_stealing: false,
        upstream_keepalive_pool_size: config.keepalive_pool_size,
        grace_period_seconds: Some(config.shutdown_grace_seconds),
        // After the grace period, the runtimes get this long to wind down.
        graceful_shutdown_timeout_seconds: Some(config.shutdown_grace_seconds.min(5)),
        max_retries: MAX_RETRIES,
        ..ServerConf::default()
    }
}

/// Half the grace period, at most 2 s: idle keep-alive connections get a last request
/// in, and in-flight requests keep the rest of the grace period.
fn idle_drain(config: &Config) -> Duration {
    (Duration::from_secs(config.shutdown_grace_seconds) / 2).min(Duration::from_secs(2))
}

/// How long an HTTP/2 connection without streams stays open: HTTP/1.1 keep-alive's 60 s.
const H2_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Loads the policy, then serves until SIGTERM (graceful) or SIGINT (fast).
///
/// An invalid policy at start is logged and counted like a failed reload: the edge
/// starts unready (503 on `/readyz` and on every routed request) and picks up the
/// policy as soon as the files are fixed.
pub fn run(config: Config) -> anyhow::Result<()> {
    let live = Arc::new(ArcSwapOption::empty());
    let metrics = Arc::new(EdgeMetrics::new());
    let tls = match &config.tls {
        Some(files) => Some(tls::Tls::load(files.clone(), metrics.registry())?),
        None => None,
    };
    let limit_store = match &config.redis_url {
        Some(url) => Some(Arc::new(SharedStore::new(url.expose(), &metrics)?)),
        None => None,
    };
    let reloader = Arc::new(Reloader::new(
        config.policy_dir.clone(),
        Arc::clone(&live),
        Arc::clone(&metrics),
        limit_store.clone(),
    ));

    // The first load runs before the server starts, so the first request already has a
    // policy; a short-lived runtime does the async part (DNS resolution).
    let startup = tokio::runtime::Builder::new_current_thread().enable_all().build().context("startup runtime")?;
    match startup.block_on(reloader.reload_if_changed()) {
        Outcome::Loaded { generation } => tracing::info!(generation, "initial policy loaded"),
        Outcome::Refused(errors) => tracing::error!(problems = %errors, "initial policy refused; starting unready"),
        Outcome::Unchanged => {}
    }
    drop(startup);

    let conf = server_conf(&config);
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let verifier = Arc::new(TokenVerifier::new(&config.jwt));
    verifier.report_to(metrics.registry());
    todo_common::traces::register_metrics(metrics.registry());
    let proxy = proxy::EdgeProxy::new(
        Arc::clone(&live),
        Arc::clone(&verifier),
        Arc::clone(&metrics),
        trace::EdgeTracer::installed(),
        config.max_body_bytes,
        config.head_timeout,
    );
    let mut proxy = pingora::proxy::http_proxy(&server.configuration, proxy);
    let mut server_options = HttpServerOptions::default();
    server_options.h2_idle_timeout = Some(H2_IDLE_TIMEOUT);
    proxy.server_options = Some(server_options);
    let layer = client_conn::ClientConnSettings::new(config.head_timeout, idle_drain(&config), Arc::clone(&metrics));
    let mut proxy_service = Service::new("edge proxy".to_owned(), client_conn::ClientConnApp::new(proxy, layer));
    match &tls {
        Some(tls) => {
            proxy_service.add_tls_with_settings(&config.listen_addr.to_string(), None, tls.listener_settings())
        }
        None => proxy_service.add_tcp(&config.listen_addr.to_string()),
    }
    let admin = admin::AdminApp {
        live: Arc::clone(&live),
        verifier: Arc::clone(&verifier),
        limit_store,
        metrics: Arc::clone(&metrics),
    };
    let mut admin_service = Service::new("edge admin".to_owned(), admin);
    // A scrape and a probe every few seconds: one thread, not one per proxy worker.
    admin_service.threads = Some(1);
    admin_service.add_tcp(&config.admin_addr.to_string());

    server.add_service(proxy_service);
    server.add_service(admin_service);
    if let Some(tls) = &tls {
        server.add_service(background_service("TLS certificate watcher", tls.watcher()));
    }
    server.add_service(background_service("policy watcher", PolicyWatcher::new(reloader)));
    server.add_service(background_service("upstream health checks", health_checks::HealthChecks::new(live)));
    server.add_service(background_service("token keys refresh", auth::KeysRefresh::new(verifier)));
    tracing::info!(
        listen = %config.listen_addr,
        tls = tls.is_some(),
        admin = %config.admin_addr,
        dir = %config.policy_dir.display(),
        "edge starting"
    );
    server.run(RunArgs::default());
    Ok(())
}
