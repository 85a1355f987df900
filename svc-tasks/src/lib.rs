//! svc-tasks: owner-scoped to-do tasks over HTTP.
//!
//! Tasks live in MongoDB; each write records its event in a transactional outbox that a
//! background relay publishes to RabbitMQ (at least once, with confirms). Task lists are
//! cached in Redis behind a per-user version that every write bumps, and the service keeps
//! answering from MongoDB when Redis or RabbitMQ is down.
//!
//! Storage, cache and event publishing sit behind small traits ([`store::TaskStore`],
//! [`cache::ListCache`], [`publisher::EventPublisher`]); [`Application::build`] always
//! uses MongoDB, Redis and RabbitMQ, and [`Application::build_with`] takes [`Backends`]
//! (the standalone mode's redb file, in-process cache and bus).
#![forbid(unsafe_code)]

pub mod cache;
pub mod config;
pub mod domain;
mod dto;
pub mod events;
mod handlers;
pub mod outbox;
pub mod publisher;
mod routes;
pub mod store;

pub use config::Config;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use todo_common::auth::TokenVerifier;
use todo_common::server::{bind, serve, shutdown_on_signal, HttpApp};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cache::{ListCache, RedisListCache};
use crate::handlers::{Schemas, TasksApi};
use crate::outbox::Relay;
use crate::publisher::{AmqpPublisher, EventPublisher};
use crate::store::{MongoTaskStore, TaskStore};

/// Between attempts to create the indexes while MongoDB is unreachable.
const INDEX_RETRY: Duration = Duration::from_secs(2);
/// How long the relay gets to stop after the HTTP server has drained.
const RELAY_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// What the service stores in, caches in and publishes to.
pub struct Backends {
    pub store: Arc<dyn TaskStore>,
    pub cache: Arc<dyn ListCache>,
    pub publisher: Arc<dyn EventPublisher>,
}

impl Backends {
    /// The standalone mode's: `tasks.redb` in `data_dir`, an in-process cache, and `bus`.
    #[cfg(feature = "embedded")]
    pub fn embedded(data_dir: &std::path::Path, bus: todo_common::bus::EventBus) -> anyhow::Result<Self> {
        Ok(Self {
            store: Arc::new(store::EmbeddedTaskStore::open(&data_dir.join("tasks.redb"))?),
            cache: Arc::new(cache::MemoryListCache::new()),
            publisher: Arc::new(publisher::BusPublisher::new(bus)),
        })
    }
}

/// The built service: bound, with backends connected lazily, not yet serving.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    http: Arc<HttpApp<TasksApi>>,
    store: Arc<dyn TaskStore>,
    relay: Arc<Relay>,
    shutdown_grace: Duration,
}

impl Application {
    /// MongoDB, Redis and RabbitMQ from `config`; never anything else.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db = config.mongodb.connect("svc-tasks").await?;
        let backends = Backends {
            store: Arc::new(MongoTaskStore::new(&db)),
            cache: Arc::new(RedisListCache::new(config.redis.url.expose(), &config.redis.key_prefix)?),
            publisher: Arc::new(AmqpPublisher::new(config.amqp_urls.clone(), &config.amqp_exchange)),
        };
        Self::build_with(config, backends).await
    }

    /// Like [`Application::build`], on the given backends; `config`'s MongoDB, Redis and
    /// AMQP settings are then unused.
    pub async fn build_with(config: Config, backends: Backends) -> anyhow::Result<Self> {
        let registry = todo_common::metrics::process_registry();
        let Backends { store, cache, publisher } = backends;
        let cache_requests = todo_common::metrics::counter_vec(
            &registry,
            "cache_requests_total",
            "Task list cache lookups, by result: hit, miss or error (Redis failed, MongoDB answered).",
            &["result"],
        );
        let relay = Arc::new(Relay::new(store.clone(), publisher.clone(), cache.clone(), &registry));
        let api = TasksApi {
            store: store.clone(),
            cache,
            cache_requests,
            publisher,
            relay_wake: relay.waker(),
            schemas: Schemas::load()?,
            max_body_bytes: config.server.max_body_bytes,
        };
        let verifier = Arc::new(TokenVerifier::new(&config.jwt));
        let http = Arc::new(HttpApp::new(Arc::new(api), verifier, registry));
        let (listener, local_addr) = bind(&config.server.listen_addr).await?;
        Ok(Self { listener, local_addr, http, store, relay, shutdown_grace: config.server.shutdown_grace })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The outbox relay, so tests can drain it without waiting for its poll.
    pub fn relay(&self) -> Arc<Relay> {
        self.relay.clone()
    }

    /// Serves until `shutdown`, drains in-flight requests, then stops the relay (which
    /// first tries to publish what those last requests wrote).
    pub async fn run_until_stopped(self, shutdown: CancellationToken) {
        tracing::info!(addr = %self.local_addr, "svc-tasks listening");
        let background = shutdown.child_token();
        let indexes = tokio::spawn(ensure_indexes(self.store.clone(), background.clone()));
        let relay_stop = CancellationToken::new();
        let relay = tokio::spawn(self.relay.clone().run(relay_stop.clone()));

        serve(self.listener, self.http, shutdown, self.shutdown_grace).await;

        relay_stop.cancel();
        if tokio::time::timeout(RELAY_STOP_TIMEOUT, relay).await.is_err() {
            tracing::warn!("outbox relay did not stop in time");
        }
        background.cancel();
        let _ = indexes.await;
        tracing::info!("svc-tasks stopped");
    }
}

/// Creates the indexes once MongoDB is reachable, without holding up the start (the
/// first write waits for them if this has not finished yet).
async fn ensure_indexes(store: Arc<dyn TaskStore>, shutdown: CancellationToken) {
    loop {
        match store.prepare().await {
            Ok(()) => return,
            Err(error) => tracing::warn!(%error, "indexes not created yet; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(INDEX_RETRY) => {}
        }
    }
}

/// Builds the service and runs it until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let app = Application::build(config).await?;
    app.run_until_stopped(shutdown_on_signal()).await;
    Ok(())
}
