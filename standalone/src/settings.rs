//! The standalone command's settings, read once at start from the environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use todo_common::config::{ConfigError, EnvReader, EnvSource, Var};

pub const LISTEN_ADDR: Var = Var::new("LISTEN_ADDR", "127.0.0.1:8080", "host:port of the API (the edge)");
pub const TODO_DATA_DIR: Var =
    Var::new("TODO_DATA_DIR", "./todo-data", "directory of the data files, the signing key and the effective policy");
pub const POLICY_DIR: Var = Var::new(
    "POLICY_DIR",
    "policies/",
    "the shipped policy files; linked from <data>/policies/, so edits still take effect live",
);
pub const TODO_USERS_ADDR: Var =
    Var::new("TODO_USERS_ADDR", "127.0.0.1:8081", "host:port of svc-users inside the process (port 0: any free one)");
pub const TODO_TASKS_ADDR: Var =
    Var::new("TODO_TASKS_ADDR", "127.0.0.1:8082", "host:port of svc-tasks inside the process (port 0: any free one)");
pub const TODO_NOTIFY_ADDR: Var =
    Var::new("TODO_NOTIFY_ADDR", "127.0.0.1:8083", "host:port of svc-notify inside the process (port 0: any free one)");
pub const RUST_LOG: Var = Var::new("RUST_LOG", "warn", "log filter; logs are JSON lines on stdout");

pub const VARS: &[Var] =
    &[LISTEN_ADDR, TODO_DATA_DIR, POLICY_DIR, TODO_USERS_ADDR, TODO_TASKS_ADDR, TODO_NOTIFY_ADDR, RUST_LOG];

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub policy_dir: PathBuf,
    pub users_addr: String,
    pub tasks_addr: String,
    pub notify_addr: String,
}

impl Settings {
    pub fn from_env(source: &dyn EnvSource) -> Result<Self, ConfigError> {
        let mut env = EnvReader::new(source);
        let settings = Self {
            listen_addr: env.parse_or(&LISTEN_ADDR, SocketAddr::from(([127, 0, 0, 1], 8080))),
            data_dir: PathBuf::from(env.string(&TODO_DATA_DIR)),
            policy_dir: PathBuf::from(env.string(&POLICY_DIR)),
            users_addr: env.string(&TODO_USERS_ADDR),
            tasks_addr: env.string(&TODO_TASKS_ADDR),
            notify_addr: env.string(&TODO_NOTIFY_ADDR),
        };
        env.finish(settings)
    }

    pub fn help() -> String {
        todo_common::config::help_text(
            "todo-standalone",
            "the whole to-do system in one process on embedded backends (nothing else to install):\n\
             the edge with the shipped policies, svc-users, svc-tasks and svc-notify on redb files,\n\
             an in-process cache and event bus. Data and the token signing key live in TODO_DATA_DIR.\n\
             The services' own variables (BCRYPT_COST, TOKEN_TTL_SECONDS, JWT_ISSUER, ...) apply too,\n\
             and the edge's: EDGE_ADMIN_ADDR (metrics and readiness), EDGE_TLS_CERT and EDGE_TLS_KEY (TLS).\n\
             Traces: one process, one service name (todo-standalone unless OTEL_SERVICE_NAME says otherwise).\n\n\
             Usage: todo-standalone [--help] [--probe]\n  --probe  GET /healthz on EDGE_ADMIN_ADDR (the container health check); exit 0 when it answers 200",
            &[VARS, todo_common::traces::VARS],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn defaults_apply_and_help_lists_every_variable() {
        let settings = Settings::from_env(&HashMap::new()).unwrap();
        assert_eq!(settings.listen_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.data_dir, PathBuf::from("./todo-data"));
        assert_eq!(settings.users_addr, "127.0.0.1:8081");
        let help = Settings::help();
        for var in VARS {
            assert!(help.contains(var.key), "{}", var.key);
        }
    }

    #[test]
    fn a_bad_listen_address_is_reported() {
        let env: HashMap<String, String> = [("LISTEN_ADDR".to_owned(), "nowhere".to_owned())].into();
        assert!(Settings::from_env(&env).unwrap_err().to_string().contains("LISTEN_ADDR"));
    }
}
