//! `svc-notify`: consumes task events from RabbitMQ and turns each into a notification
//! for the task's owner, exactly once per event id; serves them over HTTP.
//!
//! Two activities share one shutdown token: the HTTP API (the shared server frame)
//! and the [`consumer::EventConsumer`] loop. `main` reads [`Config`] and calls
//! [`run`]; tests call [`Application::build`] on port 0 and drive it over HTTP and AMQP,
//! so they exercise exactly what production runs. [`Application::build_with`] takes the
//! store and the event source instead (the standalone mode: redb and the in-process bus).
#![forbid(unsafe_code)]

pub mod config;
pub mod consumer;
pub mod domain;
mod handlers;
mod routes;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use todo_common::auth::TokenVerifier;
use todo_common::server::{self, HttpApp};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use config::AmqpSettings;
pub use config::Config;
#[cfg(feature = "embedded")]
use consumer::BusConsumer;
use consumer::{EventConsumer, RetryPolicy};
use handlers::NotifyApi;
use store::{MongoNotificationStore, NotificationStore};

/// Where task events come from.
pub enum EventSource {
    /// RabbitMQ, as production runs.
    Amqp(AmqpSettings),
    /// The in-process bus of the standalone mode.
    #[cfg(feature = "embedded")]
    Bus(todo_common::bus::BusReceiver),
}

enum Consumer {
    Amqp(EventConsumer),
    #[cfg(feature = "embedded")]
    Bus(BusConsumer),
}

pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    app: Arc<HttpApp<NotifyApi>>,
    consumer: Consumer,
    shutdown_grace: Duration,
}

impl Application {
    /// Binds the listener and prepares the backends; MongoDB and RabbitMQ are reached
    /// lazily, so the service starts (unready) even while they are still coming up.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db = config.mongodb.connect("svc-notify").await?;
        let store: Arc<dyn NotificationStore> = Arc::new(MongoNotificationStore::new(db));
        let source = EventSource::Amqp(config.amqp.clone());
        Self::build_with(config, store, source).await
    }

    /// Like [`Application::build`], on the given store and event source; `config`'s
    /// MongoDB and AMQP settings are then unused.
    pub async fn build_with(
        config: Config,
        store: Arc<dyn NotificationStore>,
        source: EventSource,
    ) -> anyhow::Result<Self> {
        let (listener, local_addr) = server::bind(&config.server.listen_addr).await?;
        let registry = todo_common::metrics::process_registry();
        let (consumer, consumer_status, consumer_name) = match source {
            EventSource::Amqp(settings) => {
                let (consumer, status) = EventConsumer::new(settings, store.clone(), RetryPolicy::default(), &registry);
                (Consumer::Amqp(consumer), status, "rabbitmq")
            }
            #[cfg(feature = "embedded")]
            EventSource::Bus(receiver) => {
                let (consumer, status) = BusConsumer::new(receiver, store.clone(), RetryPolicy::default(), &registry);
                (Consumer::Bus(consumer), status, "event-bus")
            }
        };
        let api = NotifyApi { store, consumer: consumer_status, consumer_name };
        let verifier = Arc::new(TokenVerifier::new(&config.jwt));
        let app = Arc::new(HttpApp::new(Arc::new(api), verifier, registry));
        Ok(Self { listener, local_addr, app, consumer, shutdown_grace: config.server.shutdown_grace })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves and consumes until `shutdown` fires; returns once both have stopped. A
    /// broker whose queues cannot be used as this version needs them (a classic queue
    /// under the quorum queue's name) stops both, with the reason.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr, "svc-notify listening");
        let consumer_shutdown = shutdown.clone();
        let consume = async move {
            let consumed = match self.consumer {
                Consumer::Amqp(consumer) => consumer.run(consumer_shutdown.clone()).await,
                #[cfg(feature = "embedded")]
                Consumer::Bus(consumer) => {
                    consumer.run(consumer_shutdown.clone()).await;
                    Ok(())
                }
            };
            if consumed.is_err() {
                consumer_shutdown.cancel();
            }
            consumed
        };
        let ((), consumed) =
            tokio::join!(server::serve(self.listener, self.app, shutdown.clone(), self.shutdown_grace), consume);
        consumed
    }
}

/// Runs the service until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let app = Application::build(config).await?;
    app.run_until_stopped(server::shutdown_on_signal()).await
}

/// `--migrate-to-quorum`: moves classic queues of an older installation to quorum
/// queues of the same names (svc-notify stopped meanwhile); see [`consumer::migrate_to_quorum`].
pub async fn migrate_to_quorum(config: Config) -> anyhow::Result<()> {
    let migrated = consumer::migrate_to_quorum(&config.amqp).await?;
    if migrated.0.is_empty() {
        println!("svc-notify: {} and its dead-letter queue are quorum queues already", config.amqp.queue);
    }
    for (queue, moved) in &migrated.0 {
        println!("svc-notify: {queue} is now a quorum queue ({moved} messages moved)");
    }
    Ok(())
}
