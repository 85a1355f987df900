//! Publishing task events: the [`EventPublisher`] seam the outbox relay uses, RabbitMQ
//! with publisher confirms ([`AmqpPublisher`], production) and the in-process bus
//! ([`BusPublisher`], the standalone mode, whose "confirm" is the consumer having stored
//! the notification).
//!
//! The connection is opened lazily and reopened after the broker goes away, with a
//! jittered backoff (0.5 s doubling to 10 s) so an outage costs no I/O per attempt. Every step has
//! a timeout. Only the outbox relay publishes, so one channel suffices.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use async_trait::async_trait;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use todo_common::backoff::Backoff;
use todo_common::broker::{BrokerNodes, BrokerUrls};
use todo_common::health::BackendState;
use todo_common::traces;
use tokio::sync::Mutex;
use tokio::time::{timeout, Instant};

use crate::events::EventEnvelope;

#[cfg(feature = "embedded")]
mod bus;
#[cfg(feature = "embedded")]
pub use bus::BusPublisher;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const PERSISTENT: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the broker is unreachable, next attempt in {0:?}")]
    Backoff(Duration),
    #[error("could not connect to the broker: {0}")]
    Connect(String),
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("the broker did not confirm within {PUBLISH_TIMEOUT:?}")]
    Timeout,
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    #[cfg(feature = "embedded")]
    #[error("event bus: {0}")]
    Bus(#[from] todo_common::bus::BusError),
}

/// Where the outbox relay publishes; a publish returns once the event is safe.
#[async_trait]
pub trait EventPublisher: Send + Sync + 'static {
    /// Publishes `event` and waits for its confirm.
    async fn publish(&self, event: &EventEnvelope) -> Result<(), PublishError>;
    /// Connects if needed, so readiness is honest while there is nothing to publish.
    async fn ensure_connected(&self) -> Result<(), PublishError>;
    /// The backend's name in `/readyz`.
    fn backend_name(&self) -> &'static str;
    fn state(&self) -> BackendState;
    async fn close(&self);
}

struct Link {
    connection: Connection,
    channel: Channel,
    /// Which of the broker's nodes.
    node: usize,
}

struct LinkState {
    link: Option<Link>,
    retry_at: Instant,
    backoff: Backoff,
}

pub struct AmqpPublisher {
    /// The broker's nodes, and which to connect to first.
    nodes: BrokerNodes,
    exchange: String,
    state: Mutex<LinkState>,
    /// For readiness, which must not wait behind a publish.
    connected: AtomicBool,
    last_error: StdMutex<String>,
}

impl AmqpPublisher {
    pub fn new(urls: BrokerUrls, exchange: &str) -> Self {
        Self {
            nodes: BrokerNodes::new(urls),
            exchange: exchange.to_owned(),
            state: Mutex::new(LinkState {
                link: None,
                retry_at: Instant::now(),
                backoff: Backoff::new(FIRST_BACKOFF, MAX_BACKOFF),
            }),
            connected: AtomicBool::new(false),
            last_error: StdMutex::new("not connected yet".into()),
        }
    }

    /// Publishes `event` persistently and waits for the broker's confirm.
    async fn publish_confirmed(&self, event: &EventEnvelope) -> Result<(), PublishError> {
        let mut state = self.state.lock().await;
        let channel = self.channel(&mut state).await?;
        let mut properties = BasicProperties::default()
            .with_message_id(ShortString::from(event.event_id.clone()))
            .with_content_type(ShortString::from("application/json"))
            .with_delivery_mode(PERSISTENT)
            .with_type(ShortString::from(event.routing_key.clone()))
            .with_timestamp(event.occurred_at.unix_seconds());
        if let Some(correlation_id) = &event.correlation_id {
            properties = properties.with_correlation_id(ShortString::from(correlation_id.clone()));
        }
        // The publish span's context (the relay's), so svc-notify's span is its child.
        if let Some(traceparent) = traces::current_traceparent() {
            let mut headers = FieldTable::default();
            headers.insert(ShortString::from(traces::TRACEPARENT), AMQPValue::LongString(traceparent.into()));
            properties = properties.with_headers(headers);
        }
        let publish = async {
            let confirm = channel
                .basic_publish(
                    &self.exchange,
                    &event.routing_key,
                    BasicPublishOptions::default(),
                    event.payload.as_bytes(),
                    properties,
                )
                .await?;
            confirm.await
        };
        match timeout(PUBLISH_TIMEOUT, publish).await {
            Ok(Ok(Confirmation::Ack(_))) => Ok(()),
            Ok(Ok(_)) => {
                // A quorum queue nacks while it cannot take messages (its leader's node
                // lost, say), and the node we talk to may stay unable to route to it for
                // a while: the event stays in the outbox, and the next try goes through
                // the next node.
                tracing::warn!(event_id = %event.event_id, "the broker refused the event (nack); trying another node");
                self.drop_link(&mut state, "the broker nacked a publish").await;
                Err(PublishError::Nacked)
            }
            Ok(Err(error)) => {
                self.drop_link(&mut state, &error.to_string()).await;
                Err(error.into())
            }
            Err(_) => {
                // A channel that lost a confirm cannot be trusted with the next one.
                self.drop_link(&mut state, "publish confirm timed out").await;
                Err(PublishError::Timeout)
            }
        }
    }

    async fn channel(&self, state: &mut LinkState) -> Result<Channel, PublishError> {
        if let Some(link) = &state.link {
            if link.connection.status().connected() && link.channel.status().connected() {
                return Ok(link.channel.clone());
            }
            self.drop_link(state, "the broker closed the connection").await;
        }
        let now = Instant::now();
        if now < state.retry_at {
            return Err(PublishError::Backoff(state.retry_at - now));
        }
        match timeout(CONNECT_TIMEOUT, self.connect()).await {
            Ok(Ok(link)) => {
                let channel = link.channel.clone();
                state.link = Some(link);
                state.backoff.reset();
                self.connected.store(true, Ordering::Relaxed);
                tracing::info!(exchange = %self.exchange, "connected to the broker");
                Ok(channel)
            }
            outcome => {
                let reason = match outcome {
                    Ok(Err(error)) => error,
                    _ => format!("no connection within {CONNECT_TIMEOUT:?}"),
                };
                let retry_in = state.backoff.next_delay();
                state.retry_at = Instant::now() + retry_in;
                tracing::warn!(error = %reason, ?retry_in, "broker unreachable");
                self.note_error(&reason);
                Err(PublishError::Connect(reason))
            }
        }
    }

    /// A confirmed channel on the first node that answers, starting with the one to try
    /// next; each node gets a share of the connect timeout.
    async fn connect(&self) -> Result<Link, String> {
        let per_node = CONNECT_TIMEOUT / u32::try_from(self.nodes.len().max(1)).unwrap_or(1);
        let (node, (connection, channel)) = self
            .nodes
            .connect(|url| async move {
                match timeout(per_node, self.connect_to(&url)).await {
                    Ok(connected) => connected.map_err(|error| error.to_string()),
                    Err(_) => Err(format!("no connection within {per_node:?}")),
                }
            })
            .await?;
        tracing::info!(node = %self.nodes.node(node), "publishing through this broker node");
        Ok(Link { connection, channel, node })
    }

    async fn connect_to(&self, url: &str) -> Result<(Connection, Channel), lapin::Error> {
        let connection = Connection::connect(url, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        channel
            .exchange_declare(
                &self.exchange,
                ExchangeKind::Topic,
                ExchangeDeclareOptions { durable: true, ..Default::default() },
                FieldTable::default(),
            )
            .await?;
        Ok((connection, channel))
    }

    async fn drop_link(&self, state: &mut LinkState, reason: &str) {
        if let Some(link) = state.link.take() {
            let _ = timeout(CLOSE_TIMEOUT, link.connection.close(200, "reconnecting")).await;
            self.nodes.lost(link.node);
        }
        self.connected.store(false, Ordering::Relaxed);
        self.note_error(reason);
    }

    fn note_error(&self, reason: &str) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = reason.to_owned();
        }
        self.connected.store(false, Ordering::Relaxed);
    }
}

#[async_trait]
impl EventPublisher for AmqpPublisher {
    async fn publish(&self, event: &EventEnvelope) -> Result<(), PublishError> {
        self.publish_confirmed(event).await
    }

    /// Opens the connection if it is down and the backoff allows.
    async fn ensure_connected(&self) -> Result<(), PublishError> {
        let mut state = self.state.lock().await;
        self.channel(&mut state).await.map(drop)
    }

    fn backend_name(&self) -> &'static str {
        "rabbitmq"
    }

    fn state(&self) -> BackendState {
        if self.connected.load(Ordering::Relaxed) {
            BackendState::Up
        } else {
            let detail = self.last_error.lock().map(|e| e.clone()).unwrap_or_default();
            BackendState::Degraded { detail: format!("{detail}; events wait in the outbox") }
        }
    }

    async fn close(&self) {
        let mut state = self.state.lock().await;
        if let Some(link) = state.link.take() {
            let _ = timeout(CLOSE_TIMEOUT, link.connection.close(200, "shutting down")).await;
        }
        self.connected.store(false, Ordering::Relaxed);
    }
}
