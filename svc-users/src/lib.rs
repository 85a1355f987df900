//! `svc-users`: registration, login (bcrypt on the blocking pool) and token issuing.
//!
//! `main` reads [`Config`] and calls [`run`]; tests call [`Application::build`] on
//! port 0 and drive it over HTTP, so they exercise exactly what production runs.
#![forbid(unsafe_code)]

pub mod config;
pub mod domain;
mod handlers;
mod password;
mod routes;
pub mod seed;
pub mod store;
pub mod throttle;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use todo_common::auth::{TokenIssuer, TokenVerifier};
use todo_common::server::{self, HttpApp};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;
use handlers::{Schemas, UsersApi, UsersMetrics};
use password::PasswordHasher;
use store::{MongoUserStore, UserStore};
use throttle::{LoginAttempts, LoginThrottle, RedisLoginAttempts};

/// Where svc-users keeps its state.
pub struct Backends {
    pub store: Arc<dyn UserStore>,
    pub login_attempts: Arc<dyn LoginAttempts>,
}

impl Backends {
    /// The standalone mode's: `users.redb` at `path`, and login attempts in memory.
    #[cfg(feature = "embedded")]
    pub fn embedded(path: &std::path::Path) -> anyhow::Result<Self> {
        Ok(Self {
            store: Arc::new(store::EmbeddedUserStore::open(path)?),
            login_attempts: Arc::new(throttle::MemoryLoginAttempts::new()),
        })
    }
}

pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    app: Arc<HttpApp<UsersApi>>,
    shutdown_grace: Duration,
}

impl Application {
    /// Binds the listener and prepares the backends; MongoDB and Redis are reached
    /// lazily, so the service starts (unready) even while the database is still coming up.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db = config.mongodb.connect("svc-users").await?;
        let backends = Backends {
            store: Arc::new(MongoUserStore::new(&db)),
            login_attempts: Arc::new(RedisLoginAttempts::new(config.redis.url.expose(), &config.redis.key_prefix)?),
        };
        Self::build_with(config, backends).await
    }

    /// Like [`Application::build`], on the given backends (the standalone mode's, or a
    /// test's); `config`'s MongoDB and Redis settings are then unused.
    pub async fn build_with(config: Config, backends: Backends) -> anyhow::Result<Self> {
        let (listener, local_addr) = server::bind(&config.server.listen_addr).await?;
        let registry = todo_common::metrics::process_registry();
        let throttle_failures = todo_common::metrics::counter(
            &registry,
            "user_login_throttle_failures_total",
            "Logins that went unthrottled because the login-attempt store failed.",
        );
        let api = UsersApi {
            store: backends.store,
            throttle: LoginThrottle::new(backends.login_attempts, throttle_failures),
            hasher: PasswordHasher::new(config.bcrypt_cost).await?,
            issuer: TokenIssuer::new(&config.jwt, config.token_ttl)?,
            schemas: Schemas::load()?,
            metrics: UsersMetrics {
                logins: todo_common::metrics::counter_vec(
                    &registry,
                    "user_logins_total",
                    "Login attempts by result.",
                    &["result"],
                ),
            },
            max_body_bytes: config.server.max_body_bytes,
        };
        let verifier = Arc::new(TokenVerifier::new(&config.jwt));
        let app = Arc::new(HttpApp::new(Arc::new(api), verifier, registry));
        Ok(Self { listener, local_addr, app, shutdown_grace: config.server.shutdown_grace })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) {
        tracing::info!(addr = %self.local_addr, "svc-users listening");
        server::serve(self.listener, self.app, shutdown, self.shutdown_grace).await;
    }
}

/// Runs the service until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let app = Application::build(config).await?;
    app.run_until_stopped(server::shutdown_on_signal()).await;
    Ok(())
}
