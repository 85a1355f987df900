//! svc-users settings, read once at start.

use std::time::Duration;

use todo_common::auth::{self, JwtSettings, Role};
use todo_common::config::SHUTDOWN_GRACE_SECONDS;
use todo_common::config::{ConfigError, EnvReader, EnvSource, Secret, Var};
use todo_common::mongo::MONGODB_URI;
use todo_common::server::MAX_BODY_BYTES;

pub const LISTEN_ADDR: Var = Var::new("LISTEN_ADDR", "127.0.0.1:8081", "host:port to listen on");
pub const MONGODB_DB: Var = Var::new("MONGODB_DB", "todo_users", "database holding users");
pub const BCRYPT_COST: Var = Var::new("BCRYPT_COST", "12", "bcrypt work factor, 4 to 31");
pub const REDIS_URL: Var = Var::new(
    "REDIS_URL",
    "redis://127.0.0.1:6379",
    "Redis counting failed logins per account, shared by every replica",
);
pub const REDIS_KEY_PREFIX: Var = Var::new(
    "REDIS_KEY_PREFIX",
    "todo:users:",
    "prefix of every Redis key (failed-login counts: <prefix>login-attempts:<sha256 of the e-mail>)",
);
pub const TOKEN_TTL_SECONDS: Var = Var::new("TOKEN_TTL_SECONDS", "3600", "lifetime of issued access tokens");

pub const VARS: &[Var] = &[
    LISTEN_ADDR,
    MONGODB_URI,
    MONGODB_DB,
    REDIS_URL,
    BCRYPT_COST,
    TOKEN_TTL_SECONDS,
    SHUTDOWN_GRACE_SECONDS,
    MAX_BODY_BYTES,
];

#[derive(Debug, Clone)]
pub struct Config {
    pub listen_addr: String,
    pub mongodb_uri: Secret,
    pub mongodb_db: String,
    pub redis_url: Secret,
    pub redis_key_prefix: String,
    pub jwt: JwtSettings,
    pub bcrypt_cost: u32,
    pub token_ttl: Duration,
    pub shutdown_grace: Duration,
    pub max_body_bytes: usize,
}

impl Config {
    pub fn from_env(source: &dyn EnvSource) -> Result<Self, ConfigError> {
        let mut env = EnvReader::new(source);
        let bcrypt_cost = env.parse_or(&BCRYPT_COST, 12u32);
        if !(4..=31).contains(&bcrypt_cost) {
            env.problem(format!("BCRYPT_COST={bcrypt_cost}: must be 4 to 31"));
        }
        let config = Self {
            listen_addr: env.string(&LISTEN_ADDR),
            mongodb_uri: Secret::new(env.string(&MONGODB_URI)),
            mongodb_db: env.string(&MONGODB_DB),
            redis_url: Secret::new(env.string(&REDIS_URL)),
            redis_key_prefix: env.string(&REDIS_KEY_PREFIX),
            jwt: JwtSettings::from_env(&mut env, Role::Issuer),
            bcrypt_cost,
            token_ttl: env.seconds(&TOKEN_TTL_SECONDS, 3600),
            shutdown_grace: env.seconds(&SHUTDOWN_GRACE_SECONDS, 10),
            max_body_bytes: env.parse_or(&MAX_BODY_BYTES, 65536),
        };
        env.finish(config)
    }

    pub fn help() -> String {
        todo_common::config::help_text(
            "svc-users",
            "registers users, checks passwords and issues access tokens.\n\nUsage: svc-users [--seed] [--help] [--probe] [--generate-signing-key PATH]\n  --seed  create the demo users (idempotent) and exit\n  --generate-signing-key PATH  make an Ed25519 signing key at PATH (0600) unless it exists; print its public key\n  --probe  GET /healthz on LISTEN_ADDR (the container health check); exit 0 when it answers 200",
            &[VARS, auth::ISSUER_VARS, todo_common::traces::VARS],
        )
    }
}
