//! The edge's settings, read once at start from the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use todo_common::auth::{self, JwtSettings, Role};
use todo_common::config::SHUTDOWN_GRACE_SECONDS;
use todo_common::config::{ConfigError, EnvReader, EnvSource, Secret, Var};

use crate::tls::TlsFiles;

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

pub const EDGE_ADMIN_ADDR: Var = Var::new(
    "EDGE_ADMIN_ADDR",
    "127.0.0.1:9901",
    "host:port of the admin listener (plain HTTP): /metrics, /readyz and /healthz; keep it off the public network",
);
pub const EDGE_TLS_CERT: Var = Var::optional(
    "EDGE_TLS_CERT",
    "PEM certificate chain; with EDGE_TLS_KEY the public listener speaks TLS 1.2 and 1.3 only (ALPN h2, http/1.1), \
     and the pair is re-read when the files change",
);
pub const EDGE_TLS_KEY: Var = Var::optional("EDGE_TLS_KEY", "PEM private key (PKCS#8, RSA or EC) of EDGE_TLS_CERT");

pub const VARS: &[Var] = &[
    LISTEN_ADDR,
    EDGE_ADMIN_ADDR,
    EDGE_TLS_CERT,
    EDGE_TLS_KEY,
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
    pub admin_addr: SocketAddr,
    /// The certificate and key the public listener serves; `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
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
        let admin_addr = env.parse_or(&EDGE_ADMIN_ADDR, SocketAddr::from(([127, 0, 0, 1], 9901)));
        if admin_addr == listen_addr {
            env.problem(format!(
                "EDGE_ADMIN_ADDR and LISTEN_ADDR are both {listen_addr}; the admin listener needs a port of its own"
            ));
        }
        let tls = match (env.raw(&EDGE_TLS_CERT), env.raw(&EDGE_TLS_KEY)) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert: PathBuf::from(cert), key: PathBuf::from(key) }),
            (None, None) => None,
            (Some(_), None) => {
                env.problem("EDGE_TLS_CERT is set but EDGE_TLS_KEY is not: TLS needs both".into());
                None
            }
            (None, Some(_)) => {
                env.problem("EDGE_TLS_KEY is set but EDGE_TLS_CERT is not: TLS needs both".into());
                None
            }
        };
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
            admin_addr,
            tls,
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
             --probe  GET /healthz on EDGE_ADMIN_ADDR (the container health check); exit 0 when it answers 200",
            &[VARS, auth::VERIFIER_VARS, todo_common::traces::VARS],
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

    #[test]
    fn defaults_apply() {
        let config = Config::from_env(&[("JWT_SECRET", "0123456789abcdefghijklmnopqrstuvwxyz")]).unwrap();
        assert_eq!(config.listen_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.admin_addr.to_string(), "127.0.0.1:9901");
        assert!(config.tls.is_none());
        assert_eq!(config.max_body_bytes, 1 << 20);
        assert!(config.threads >= 1);
        assert_eq!(config.shutdown_grace_seconds, 10);
    }

    #[test]
    fn bad_values_are_all_reported() {
        let err = Config::from_env(&[("LISTEN_ADDR", "nowhere"), ("EDGE_MAX_BODY_BYTES", "0")]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("LISTEN_ADDR") && text.contains("EDGE_MAX_BODY_BYTES") && text.contains("JWT_SECRET"));
    }

    #[test]
    fn tls_needs_both_files_and_the_admin_listener_a_port_of_its_own() {
        let secret = ("JWT_SECRET", "0123456789abcdefghijklmnopqrstuvwxyz");
        let err = Config::from_env(&[secret, ("EDGE_TLS_CERT", "/tls/tls.crt")]).unwrap_err();
        assert!(err.to_string().contains("EDGE_TLS_KEY is not"), "{err}");
        let err = Config::from_env(&[secret, ("EDGE_TLS_KEY", "/tls/tls.key")]).unwrap_err();
        assert!(err.to_string().contains("EDGE_TLS_CERT is not"), "{err}");
        let both = Config::from_env(&[secret, ("EDGE_TLS_CERT", "/c.pem"), ("EDGE_TLS_KEY", "/k.pem")]).unwrap();
        assert_eq!(both.tls.unwrap().cert, PathBuf::from("/c.pem"));
        let err = Config::from_env(&[secret, ("EDGE_ADMIN_ADDR", "127.0.0.1:8080")]).unwrap_err();
        assert!(err.to_string().contains("port of its own"), "{err}");
    }

    #[test]
    fn help_lists_every_variable() {
        let help = Config::help();
        for var in VARS.iter().chain(auth::VERIFIER_VARS) {
            assert!(help.contains(var.key), "{}", var.key);
        }
    }
}
