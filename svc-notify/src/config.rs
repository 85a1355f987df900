//! The service's settings, read once at start from the environment.

use todo_common::auth::{self, JwtSettings, Role};
use todo_common::broker::BrokerUrls;
use todo_common::config::{ConfigError, EnvReader, EnvSource, Var};
use todo_common::mongo::{MongoSettings, MONGODB_URI};
use todo_common::server::{ServerSettings, SERVER_VARS};

pub const LISTEN_ADDR: Var = Var::new("LISTEN_ADDR", "127.0.0.1:8083", "host:port the HTTP API listens on");
pub const MONGODB_DB: Var = Var::new("MONGODB_DB", "todo_notify", "MongoDB database holding the notifications");
pub const AMQP_URL: Var = Var::new(
    "AMQP_URL",
    "amqp://guest:guest@127.0.0.1:5672/%2f",
    "RabbitMQ connection URL (may carry a password); the nodes of one cluster separated by commas",
);
pub const AMQP_EXCHANGE: Var =
    Var::new("AMQP_EXCHANGE", "task.events", "durable topic exchange svc-tasks publishes task events to");
pub const AMQP_QUEUE: Var = Var::new(
    "AMQP_QUEUE",
    "notify.events",
    "durable queue this service consumes; dead letters go to <queue>.dlx (fanout) -> <queue>.dlq",
);

/// The variables of this service's own, for `--help` (with the server's, JWT and traces').
pub const VARS: &[Var] = &[LISTEN_ADDR, MONGODB_URI, MONGODB_DB, AMQP_URL, AMQP_EXCHANGE, AMQP_QUEUE];

/// AMQP names are short strings (255 bytes); the queue also names its `.dlx`/`.dlq`.
const MAX_AMQP_NAME: usize = 255 - 4;

#[derive(Debug, Clone)]
pub struct Config {
    /// No endpoint of this service reads a body today; its limit is every service's.
    pub server: ServerSettings,
    pub mongodb: MongoSettings,
    pub amqp: AmqpSettings,
    pub jwt: JwtSettings,
}

/// Where and what the event consumer consumes.
#[derive(Debug, Clone)]
pub struct AmqpSettings {
    /// The nodes of the broker cluster, tried in turn.
    pub urls: BrokerUrls,
    pub exchange: String,
    pub queue: String,
}

impl AmqpSettings {
    /// The fanout exchange rejected messages are dead-lettered to.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.queue)
    }

    /// The queue that keeps dead letters for an operator to inspect.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dlq", self.queue)
    }
}

impl Config {
    pub fn from_env(source: &dyn EnvSource) -> Result<Self, ConfigError> {
        let mut reader = EnvReader::new(source);
        let server = ServerSettings::read(&mut reader, &LISTEN_ADDR);
        let mongodb = MongoSettings::read(&mut reader, &MONGODB_DB);
        let amqp = AmqpSettings {
            urls: BrokerUrls::read(&mut reader, &AMQP_URL),
            exchange: amqp_name(&mut reader, &AMQP_EXCHANGE),
            queue: amqp_name(&mut reader, &AMQP_QUEUE),
        };
        let jwt = JwtSettings::from_env(&mut reader, Role::Verifier);
        reader.finish(Self { server, mongodb, amqp, jwt })
    }

    pub fn help() -> String {
        todo_common::config::help_text(
            "svc-notify",
            "turns task events from RabbitMQ into per-user notifications and serves them.\n\nUsage: svc-notify [--help] [--probe] [--migrate-to-quorum]\n  --migrate-to-quorum  move the classic queues of an older installation to quorum queues (svc-notify stopped), then exit\n  --probe  GET /healthz on LISTEN_ADDR (the container health check); exit 0 when it answers 200",
            &[VARS, SERVER_VARS, auth::VERIFIER_VARS, todo_common::traces::VARS],
        )
    }
}

fn amqp_name(reader: &mut EnvReader<'_>, var: &Var) -> String {
    let name = reader.string(var);
    if name.len() > MAX_AMQP_NAME {
        reader.problem(format!("{} is longer than {MAX_AMQP_NAME} bytes", var.key));
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_contract() {
        let config = Config::from_env(&[("JWT_SECRET", "0123456789abcdefghijklmnopqrstuvwxyz")]).unwrap();
        assert_eq!(config.server.listen_addr, "127.0.0.1:8083");
        assert_eq!(config.mongodb.database, "todo_notify");
        assert_eq!(config.amqp.urls, BrokerUrls::parse("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap());
        assert_eq!(config.amqp.exchange, "task.events");
        assert_eq!(config.amqp.queue, "notify.events");
        assert_eq!(config.amqp.dead_letter_exchange(), "notify.events.dlx");
        assert_eq!(config.amqp.dead_letter_queue(), "notify.events.dlq");
    }

    #[test]
    fn bad_values_are_all_reported() {
        let long = "q".repeat(300);
        let err = Config::from_env(&[("AMQP_QUEUE", long.as_str()), ("SHUTDOWN_GRACE_SECONDS", "soon")]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("AMQP_QUEUE") && text.contains("SHUTDOWN_GRACE_SECONDS") && text.contains("JWT_SECRET"));
    }
}
