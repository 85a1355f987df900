//! The edge's settings, read once at start from the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use todo_common::auth::{self, JwtSettings, Role};
use todo_common::config::{ConfigError, EnvReader, EnvSource, Secret, Var};
use todo_common::server::SHUTDOWN_GRACE_SECONDS;

pub const LISTEN_ADDR: Var = Var::new("LISTEN_ADDR", "127.0.0.1:8080", "host:port the public listener binds");
pub const POLICY_DIR: Var =
    Var::new("POLICY_DIR", "policies/", "directory whose *.toml files hold routes, upstreams, limits and CORS");
pub const EDGE_MAX_BODY_BYTES: Var =
    Var::new("EDGE_MAX_BODY_BYTES", "1048576", "largest request body the edge forwards (larger: 413)");
pub const EDGE_THREADS: Var =
    Var::new("EDGE_THREADS", "0", "worker threads of the proxy; 0 means one per available CPU (cgroup aware)");
pub const EDGE_KEEPALIVE_POOL_SIZE: Var =
    Var::new("EDGE_KEEPALIVE_POOL_SIZE", "128", "idle upstream connections kept for reuse, over all upstreams");
pub const EDGE_HEAD_TIMEOUT_SECONDS: Var = Var::new(
    "EDGE_HEAD_TIMEOUT_SECONDS",
    "10",
    "longest a client may take to send a request line and headers, from their first byte (then 408)",
);

pub const EDGE_REDIS_URL: Var = Var::optional(
    "EDGE_REDIS_URL",
    "Redis for limit tables with store = \"redis\" (one budget across replicas), e.g. redis://redis:6379; unset: only local limits",
);

pub const VARS: &[Var] = &[
    LISTEN_ADDR,
    POLICY_DIR,
    EDGE_MAX_BODY_BYTES,
    EDGE_THREADS,
    EDGE_KEEPALIVE_POOL_SIZE,
    EDGE_HEAD_TIMEOUT_SECONDS,
    EDGE_REDIS_URL,
    SHUTDOWN_GRACE_SECONDS,
];

#[derive(Debug, Clone)]
pub struct Config {
    pub listen_addr: SocketAddr,
    pub policy_dir: PathBuf,
    pub max_body_bytes: usize,
    pub threads: usize,
    pub keepalive_pool_size: usize,
    pub head_timeout: Duration,
    pub shutdown_grace_seconds: u64,
    pub jwt: JwtSettings,
    /// Where shared rate limits are counted; `None`: a policy may not ask for them.
    pub redis_url: Option<Secret>,
}

impl Config {
    pub fn from_env(source: &dyn EnvSource) -> Result<Self, ConfigError> {
        let mut env = EnvReader::new(source);
        let listen_addr = env.parse_or(&LISTEN_ADDR, SocketAddr::from(([127, 0, 0, 1], 8080)));
        let max_body_bytes: usize = env.parse_or(&EDGE_MAX_BODY_BYTES, 1 << 20);
        if max_body_bytes == 0 {
            env.problem("EDGE_MAX_BODY_BYTES must be at least 1".into());
        }
        let threads = match env.parse_or::<usize>(&EDGE_THREADS, 0) {
            0 => std::thread::available_parallelism().map(usize::from).unwrap_or(1),
            n => n,
        };
        let head_timeout_seconds: u64 = env.parse_or(&EDGE_HEAD_TIMEOUT_SECONDS, 10);
        if head_timeout_seconds == 0 {
            env.problem("EDGE_HEAD_TIMEOUT_SECONDS must be at least 1".into());
        }
        let config = Self {
            listen_addr,
            policy_dir: PathBuf::from(env.string(&POLICY_DIR)),
            max_body_bytes,
            threads,
            keepalive_pool_size: env.parse_or(&EDGE_KEEPALIVE_POOL_SIZE, 128),
            head_timeout: Duration::from_secs(head_timeout_seconds),
            shutdown_grace_seconds: env.parse_or(&SHUTDOWN_GRACE_SECONDS, 10),
            jwt: JwtSettings::from_env(&mut env, Role::Verifier),
            redis_url: redis_url(&env),
        };
        env.finish(config)
    }

    /// What the policy may use, as `edge --check-policies` sees it: the same as a
    /// started edge with the same environment.
    pub fn policy_capabilities(source: &dyn EnvSource) -> crate::policy::Capabilities {
        crate::policy::Capabilities { redis: redis_url(&EnvReader::new(source)).is_some() }
    }

    pub fn help() -> String {
        todo_common::config::help_text(
            "edge",
            "the public entry point (Pingora): routing, token check, CORS, security headers, rate limits.\n\n\
             Usage: edge [--help] [--probe] [--check-policies DIR]\n  \
             --check-policies DIR  validate the policy files in DIR, print every problem, exit non-zero if any\n  \
             --probe  GET /healthz on LISTEN_ADDR (the container health check); exit 0 when it answers 200",
            &[VARS, auth::VERIFIER_VARS],
        )
    }
}

/// A Redis URL may carry a password.
fn redis_url(env: &EnvReader<'_>) -> Option<Secret> {
    env.raw(&EDGE_REDIS_URL).map(Secret::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_apply() {
        let config = Config::from_env(&env(&[("JWT_SECRET", "0123456789abcdefghijklmnopqrstuvwxyz")])).unwrap();
        assert_eq!(config.listen_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.max_body_bytes, 1 << 20);
        assert!(config.threads >= 1);
        assert_eq!(config.shutdown_grace_seconds, 10);
    }

    #[test]
    fn bad_values_are_all_reported() {
        let err = Config::from_env(&env(&[("LISTEN_ADDR", "nowhere"), ("EDGE_MAX_BODY_BYTES", "0")])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("LISTEN_ADDR") && text.contains("EDGE_MAX_BODY_BYTES") && text.contains("JWT_SECRET"));
    }

    #[test]
    fn help_lists_every_variable() {
        let help = Config::help();
        for var in VARS.iter().chain(auth::VERIFIER_VARS) {
            assert!(help.contains(var.key), "{}", var.key);
        }
    }
}
