//! The task-event consumer: a loop that keeps one AMQP session alive (reconnecting
//! with backoff when the broker goes away) and, for each delivery, runs
//! [`Processor::process_one`] and settles the message by its [`Outcome`]:
//! ack once the notification is stored (or was already), reject poison to the
//! dead-letter queue, hand a message back when the store is unavailable.
//!
//! It runs under the application's shutdown token: on shutdown it cancels the
//! consumer, lets the message in hand finish, and closes the channel so every
//! prefetched, unacknowledged message goes back to the queue.

#[cfg(feature = "embedded")]
mod bus;
mod migration;
mod processor;
mod topology;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicRejectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};
use todo_common::backoff::Backoff;
use todo_common::broker::BrokerNodes;
use todo_common::health::BackendState;
use todo_common::metrics;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

#[cfg(feature = "embedded")]
pub use bus::BusConsumer;
pub use migration::{migrate_to_quorum, Migrated};
pub use processor::{Outcome, Processor, RetryPolicy};
pub use topology::{IncompatibleQueue, BINDING_KEY, DELIVERY_LIMIT, PREFETCH};

use crate::config::AmqpSettings;
use crate::store::NotificationStore;
use topology::amqp_call;

const RECONNECT_FIRST_DELAY: Duration = Duration::from_millis(500);
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(10);
/// How long the loop waits for the database before creating the indexes again.
const INDEX_RETRY_MAX_DELAY: Duration = Duration::from_secs(10);

/// The consumer's counters, on the process registry.
#[derive(Clone)]
pub struct ConsumerMetrics {
    consumed: IntCounter,
    duplicate: IntCounter,
    dead_lettered: IntCounterVec,
    retried: IntCounter,
    connected: IntGauge,
}

impl ConsumerMetrics {
    pub fn new(registry: &Registry) -> Self {
        Self {
            consumed: metrics::counter(registry, "events_consumed_total", "Task events stored as a new notification."),
            duplicate: metrics::counter(
                registry,
                "events_duplicate_total",
                "Task events acknowledged without effect because their id was already stored.",
            ),
            dead_lettered: metrics::counter_vec(
                registry,
                "events_dead_lettered_total",
                "Messages that can never be processed, rejected to the dead-letter queue, by reason.",
                &["reason"],
            ),
            retried: metrics::counter(
                registry,
                "events_retried_total",
                "Deliveries handed back to the queue because the store was unavailable.",
            ),
            connected: metrics::gauge(
                registry,
                "events_consumer_connected",
                "1 while the consumer holds a session with the broker, else 0.",
            ),
        }
    }
}

impl ConsumerMetrics {
    /// Counts and logs what became of one message. Called before the message is settled:
    /// its effect on the store has happened whatever the settling does.
    fn record(&self, outcome: &Outcome, event_id: Option<&str>, routing_key: &str) {
        match outcome {
            Outcome::Stored => {
                self.consumed.inc();
                tracing::info!(event_id, routing_key, "notification stored");
            }
            Outcome::Duplicate => {
                self.duplicate.inc();
                tracing::info!(event_id, routing_key, "duplicate event ignored");
            }
            Outcome::DeadLettered(reason) => {
                self.dead_lettered.with_label_values(&[reason.label()]).inc();
                tracing::warn!(event_id, routing_key, %reason, "unprocessable message dead-lettered");
            }
            Outcome::Retry => {
                self.retried.inc();
                tracing::warn!(event_id, routing_key, "message handed back for a later retry");
            }
        }
    }
}

/// The consumer's connection state as `/readyz` reports it (never critical: while the
/// broker is away events wait in the queue and the API keeps serving).
#[derive(Clone)]
pub struct ConsumerStatus(watch::Receiver<BackendState>);

impl ConsumerStatus {
    pub fn current(&self) -> BackendState {
        self.0.borrow().clone()
    }
}

/// Why one broker session ended.
enum SessionEnd {
    Shutdown,
    Lost(String),
}

pub struct EventConsumer {
    settings: AmqpSettings,
    processor: Processor,
    metrics: ConsumerMetrics,
    status: watch::Sender<BackendState>,
    /// The broker's nodes, and which to connect to first.
    nodes: BrokerNodes,
}

impl EventConsumer {
    pub fn new(
        settings: AmqpSettings,
        store: Arc<dyn NotificationStore>,
        retry: RetryPolicy,
        registry: &Registry,
    ) -> (Self, ConsumerStatus) {
        let (status, watcher) = watch::channel(degraded("not connected yet"));
        let processor = Processor::new(store, retry);
        let metrics = ConsumerMetrics::new(registry);
        let nodes = BrokerNodes::new(settings.urls.clone());
        let consumer = Self { settings, processor, metrics, status, nodes };
        (consumer, ConsumerStatus(watcher))
    }

    /// Consumes until `shutdown`, reconnecting with backoff whenever the session is lost
    /// (to the next node first, when `AMQP_URL` lists several). Fails only when the
    /// broker holds a queue declared otherwise under our queue's name (a classic queue):
    /// retrying cannot fix that, an operator must migrate it.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        if self.wait_for_indexes(&shutdown).await {
            let mut backoff = Backoff::new(RECONNECT_FIRST_DELAY, RECONNECT_MAX_DELAY);
            while !shutdown.is_cancelled() {
                match self.session(&shutdown, &mut backoff).await {
                    Ok(SessionEnd::Shutdown) => break,
                    Ok(SessionEnd::Lost(reason)) => {
                        tracing::warn!(%reason, "lost the broker session");
                        self.set_status(degraded(&format!("disconnected: {reason}")));
                    }
                    Err(error) if error.downcast_ref::<IncompatibleQueue>().is_some() => {
                        tracing::error!(error = format!("{error:#}"), "cannot consume: the queue must be migrated");
                        self.set_status(degraded("the queue must be migrated to a quorum queue"));
                        return Err(error);
                    }
                    Err(error) => {
                        tracing::warn!(error = format!("{error:#}"), "cannot consume from the broker");
                        self.set_status(degraded(&format!("cannot connect: {error:#}")));
                    }
                }
                let delay = backoff.next_delay();
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
        self.set_status(degraded("stopped"));
        tracing::info!("event consumer stopped");
        Ok(())
    }

    /// Consuming waits until the store's indexes exist ([`Processor::prepare`]). False
    /// on shutdown.
    async fn wait_for_indexes(&self, shutdown: &CancellationToken) -> bool {
        let mut backoff = Backoff::new(RECONNECT_FIRST_DELAY, INDEX_RETRY_MAX_DELAY);
        loop {
            match self.processor.prepare().await {
                Ok(()) => return true,
                Err(error) => {
                    tracing::warn!(%error, "cannot create the notification indexes yet");
                    self.set_status(degraded("waiting for the database before consuming"));
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    /// One connection: declare, consume until shutdown or loss, then close what is left.
    async fn session(&self, shutdown: &CancellationToken, backoff: &mut Backoff) -> anyhow::Result<SessionEnd> {
        let (node, connection) = self.connect().await?;
        let result = self.consume(&connection, shutdown, backoff).await;
        if !matches!(result, Ok(SessionEnd::Shutdown)) {
            self.nodes.lost(node);
        }
        self.metrics.connected.set(0);
        if connection.status().connected() {
            if let Err(error) = amqp_call("close the connection", connection.close(200, "consumer stopping")).await {
                tracing::debug!(error = format!("{error:#}"), "closing the broker connection failed");
            }
        }
        result
    }

    /// A connection to the first node that answers, starting with the one to try next.
    async fn connect(&self) -> anyhow::Result<(usize, Connection)> {
        let (node, connection) =
            self.nodes.connect(|url| connect_to(url, "svc-notify")).await.map_err(anyhow::Error::msg)?;
        tracing::info!(node = %self.nodes.node(node), "connected to the broker");
        Ok((node, connection))
    }

    async fn consume(
        &self,
        connection: &Connection,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
    ) -> anyhow::Result<SessionEnd> {
        let channel = amqp_call("open a channel", connection.create_channel()).await?;
        topology::declare(&channel, &self.settings).await?;
        let tag = format!("svc-notify-{}", uuid::Uuid::new_v4().simple());
        let mut deliveries = amqp_call(
            "start consuming",
            channel.basic_consume(&self.settings.queue, &tag, BasicConsumeOptions::default(), FieldTable::default()),
        )
        .await?;
        tracing::info!(queue = %self.settings.queue, exchange = %self.settings.exchange, "consuming task events");
        self.set_status(BackendState::Up);
        self.metrics.connected.set(1);
        backoff.reset();

        loop {
            let next = tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    stop_consuming(&channel, &tag).await;
                    return Ok(SessionEnd::Shutdown);
                }
                next = deliveries.next() => next,
            };
            let delivery = match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(error)) => return Ok(SessionEnd::Lost(error.to_string())),
                None => return Ok(SessionEnd::Lost("the broker cancelled the consumer".into())),
            };
            if self.handle_delivery(&delivery, shutdown).await? == Outcome::Retry {
                // The store is down: give it a moment instead of spinning on redeliveries.
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(self.processor.retry_policy().max_delay) => {}
                }
            }
        }
    }

    /// Processes one delivery and settles it with the broker according to its outcome.
    pub async fn handle_delivery(&self, delivery: &Delivery, shutdown: &CancellationToken) -> anyhow::Result<Outcome> {
        let message_id = delivery.properties.message_id().as_ref().map(|id| id.as_str().to_owned());
        let routing_key = delivery.routing_key.as_str();
        let span = processor::message_span(routing_key, message_id.as_deref(), traceparent(delivery).as_deref());
        self.settle(delivery, message_id, shutdown).instrument(span).await
    }

    async fn settle(
        &self,
        delivery: &Delivery,
        message_id: Option<String>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Outcome> {
        let outcome = self.processor.process_one(&delivery.data, shutdown).await;
        self.metrics.record(&outcome, message_id.as_deref(), delivery.routing_key.as_str());
        match &outcome {
            Outcome::Stored | Outcome::Duplicate => {
                amqp_call("ack", delivery.acker.ack(BasicAckOptions::default())).await?;
            }
            Outcome::DeadLettered(_) => {
                amqp_call("reject", delivery.acker.reject(BasicRejectOptions { requeue: false })).await?;
            }
            Outcome::Retry => {
                let requeue = BasicNackOptions { requeue: true, ..Default::default() };
                amqp_call("nack", delivery.acker.nack(requeue)).await?;
            }
        }
        Ok(outcome)
    }

    fn set_status(&self, state: BackendState) {
        self.status.send_replace(state);
    }
}

/// The `traceparent` header svc-tasks' relay put on the message, if any.
fn traceparent(delivery: &Delivery) -> Option<String> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get(todo_common::traces::TRACEPARENT)? {
        AMQPValue::LongString(value) => std::str::from_utf8(value.as_bytes()).ok().map(str::to_owned),
        _ => None,
    }
}

/// Cancels the consumer, then closes the channel, which hands every prefetched,
/// unacknowledged delivery back to the queue. Failures only matter for the log: the
/// connection is closed right after anyway.
async fn stop_consuming(channel: &lapin::Channel, tag: &str) {
    if let Err(error) = amqp_call("cancel the consumer", channel.basic_cancel(tag, BasicCancelOptions::default())).await
    {
        tracing::debug!(error = format!("{error:#}"), "cancelling the consumer failed");
    }
    if let Err(error) = amqp_call("close the channel", channel.close(200, "consumer stopping")).await {
        tracing::debug!(error = format!("{error:#}"), "closing the channel failed");
    }
}

/// One connection, named for the broker's connection list.
async fn connect_to(url: String, name: &str) -> anyhow::Result<Connection> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    amqp_call("connect to the broker", Connection::connect(&url, properties)).await
}

fn degraded(detail: &str) -> BackendState {
    BackendState::Degraded { detail: detail.to_owned() }
}
