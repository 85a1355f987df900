//! The service's settings, read once at start from the environment.

use todo_common::auth::{self, JwtSettings, Role};
use todo_common::broker::BrokerUrls;
use todo_common::config::{ConfigError, EnvReader, EnvSource, Var};
use todo_common::mongo::{MongoSettings, MONGODB_URI};
use todo_common::redis::RedisSettings;
use todo_common::server::{ServerSettings, SERVER_VARS};

pub const LISTEN_ADDR: Var = Var::new("LISTEN_ADDR", "127.0.0.1:8082", "host:port to listen on");
pub const MONGODB_DB: Var = Var::new("MONGODB_DB", "todo_tasks", "MongoDB database holding tasks and the outbox");
pub const REDIS_URL: Var = Var::new("REDIS_URL", "redis://127.0.0.1:6379", "Redis holding the task list cache");
pub const REDIS_KEY_PREFIX: Var = Var::new("REDIS_KEY_PREFIX", "todo:tasks:", "prefix of every Redis key");
pub const AMQP_URL: Var = Var::new(
    "AMQP_URL",
    "amqp://guest:guest@127.0.0.1:5672/%2f",
    "RabbitMQ that task events are published to; the nodes of one cluster separated by commas",
);
pub const AMQP_EXCHANGE: Var = Var::new("AMQP_EXCHANGE", "task.events", "durable topic exchange for task events");

/// The variables of this service's own, for `--help` (with the server's, JWT and traces').
pub const VARS: &[Var] = &[LISTEN_ADDR, MONGODB_URI, MONGODB_DB, REDIS_URL, REDIS_KEY_PREFIX, AMQP_URL, AMQP_EXCHANGE];

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerSettings,
    pub mongodb: MongoSettings,
    /// The list cache.
    pub redis: RedisSettings,
    pub amqp_urls: BrokerUrls,
    pub amqp_exchange: String,
    pub jwt: JwtSettings,
}

impl Config {
    pub fn from_env(source: &dyn EnvSource) -> Result<Self, ConfigError> {
        let mut reader = EnvReader::new(source);
        let config = Self {
            server: ServerSettings::read(&mut reader, &LISTEN_ADDR),
            mongodb: MongoSettings::read(&mut reader, &MONGODB_DB),
            redis: RedisSettings::read(&mut reader, &REDIS_URL, &REDIS_KEY_PREFIX),
            amqp_urls: BrokerUrls::read(&mut reader, &AMQP_URL),
            amqp_exchange: reader.string(&AMQP_EXCHANGE),
            jwt: JwtSettings::from_env(&mut reader, Role::Verifier),
        };
        reader.finish(config)
    }

    pub fn help() -> String {
        todo_common::config::help_text(
            "svc-tasks",
            "owner-scoped tasks with a Redis list cache, publishing task events through a transactional outbox.\n\nUsage: svc-tasks [--help] [--probe]\n  --probe  GET /healthz on LISTEN_ADDR (the container health check); exit 0 when it answers 200",
            &[VARS, SERVER_VARS, auth::VERIFIER_VARS, todo_common::traces::VARS],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply() {
        let config = Config::from_env(&[("JWT_SECRET", "0123456789abcdefghijklmnopqrstuvwxyz")]).unwrap();
        assert_eq!(config.server.listen_addr, "127.0.0.1:8082");
        assert_eq!(config.mongodb.database, "todo_tasks");
        assert_eq!(config.redis.key_prefix, "todo:tasks:");
        assert_eq!(config.amqp_exchange, "task.events");
        assert_eq!(config.server.max_body_bytes, 65536);
    }

    #[test]
    fn every_problem_is_reported() {
        let err = Config::from_env(&[("MAX_BODY_BYTES", "lots")]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("MAX_BODY_BYTES") && text.contains("JWT_SECRET"), "{text}");
    }

    #[test]
    fn help_lists_every_variable() {
        let text = Config::help();
        for var in VARS.iter().chain(SERVER_VARS).chain(auth::VERIFIER_VARS) {
            assert!(text.contains(var.key), "{} missing from --help", var.key);
        }
    }
}
