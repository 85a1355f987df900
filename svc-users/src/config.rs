//! svc-users settings, read once at start.

use std::time::Duration;

use todo_common::auth::{self, JwtSettings, Role};
use todo_common::config::{ConfigError, EnvReader, EnvSource, Var};
use todo_common::mongo::{MongoSettings, MONGODB_URI};
use todo_common::redis::RedisSettings;
use todo_common::server::{ServerSettings, SERVER_VARS};

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

/// The variables of this service's own, for `--help` (with the server's, JWT and traces').
pub const VARS: &[Var] =
    &[LISTEN_ADDR, MONGODB_URI, MONGODB_DB, BCRYPT_COST, TOKEN_TTL_SECONDS, REDIS_URL, REDIS_KEY_PREFIX];

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerSettings,
    pub mongodb: MongoSettings,
    /// The failed-login counts.
    pub redis: RedisSettings,
    pub jwt: JwtSettings,
    pub bcrypt_cost: u32,
    pub token_ttl: Duration,
}

impl Config {
    pub fn from_env(source: &dyn EnvSource) -> Result<Self, ConfigError> {
        let mut env = EnvReader::new(source);
        let bcrypt_cost = env.parse_or(&BCRYPT_COST, 12u32);
        if !(4..=31).contains(&bcrypt_cost) {
            env.problem(format!("BCRYPT_COST={bcrypt_cost}: must be 4 to 31"));
        }
        let config = Self {
            server: ServerSettings::read(&mut env, &LISTEN_ADDR),
            mongodb: MongoSettings::read(&mut env, &MONGODB_DB),
            redis: RedisSettings::read(&mut env, &REDIS_URL, &REDIS_KEY_PREFIX),
            jwt: JwtSettings::from_env(&mut env, Role::Issuer),
            bcrypt_cost,
            token_ttl: env.seconds(&TOKEN_TTL_SECONDS, 3600),
        };
        env.finish(config)
    }

    pub fn help() -> String {
        todo_common::config::help_text(
            "svc-users",
            "registers users, checks passwords and issues access tokens.\n\nUsage: svc-users [--seed] [--help] [--probe] [--generate-signing-key PATH]\n  --seed  create the demo users (idempotent) and exit\n  --generate-signing-key PATH  make an Ed25519 signing key at PATH (0600) unless it exists; print its public key\n  --probe  GET /healthz on LISTEN_ADDR (the container health check); exit 0 when it answers 200",
            &[VARS, SERVER_VARS, auth::ISSUER_VARS, todo_common::traces::VARS],
        )
    }
}
