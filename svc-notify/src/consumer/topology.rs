//! The broker objects this consumer relies on, declared (idempotently) on every
//! connect so a fresh or restarted broker is set up without an operator:
//! the task exchange, our queue bound with `task.*` and dead-lettering to `<queue>.dlx`,
//! a fanout exchange feeding `<queue>.dlq`.
//!
//! Both queues are quorum queues: replicated by Raft across the cluster's nodes, so
//! losing a node loses neither them nor their messages. A queue cannot change its type
//! in place: an existing classic queue of the same name is reported as
//! [`IncompatibleQueue`], and `svc-notify --migrate-to-quorum` moves it over.

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use lapin::options::{BasicQosOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use crate::config::AmqpSettings;

/// Every binding key the queue takes from the task exchange.
pub const BINDING_KEY: &str = "task.*";
/// Unacknowledged deliveries the broker may push ahead of our acks.
pub const PREFETCH: u16 = 32;
/// No broker call may hang the consumer longer than this.
pub const AMQP_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs one broker call under [`AMQP_CALL_TIMEOUT`], naming it in the error.
pub async fn amqp_call<T>(what: &'static str, call: impl Future<Output = lapin::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(AMQP_CALL_TIMEOUT, call)
        .await
        .with_context(|| format!("{what}: no answer within {AMQP_CALL_TIMEOUT:?}"))?
        .with_context(|| what.to_owned())
}

/// Deliveries of one message before the queue dead-letters it. A message handed back
/// because the store is down is delivered again every few seconds, so this lets a
/// store outage of well over an hour pass without dead-lettering; it bounds a message
/// that makes the consumer crash before it can settle it (RabbitMQ 4 would use 20).
pub const DELIVERY_LIMIT: i64 = 1000;

/// The broker holds a queue under a name we declare, with other arguments than ours:
/// typically a classic queue of svc-notify from before quorum queues.
#[derive(Debug, thiserror::Error)]
#[error("the queue {queue:?} exists with other arguments than svc-notify declares (typically a classic queue from before quorum queues): migrate it once with `svc-notify --migrate-to-quorum` (deploy/README.md, \"Moving to quorum queues\")")]
pub struct IncompatibleQueue {
    pub queue: String,
}

/// The arguments of a quorum queue; dead letters are moved at least once (the broker
/// keeps a message until the dead-letter queue confirms it), which needs publishes to
/// be refused, not dropped, if the queue ever filled up.
pub fn quorum_arguments(dead_letter_exchange: Option<&str>) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    if let Some(exchange) = dead_letter_exchange {
        arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(exchange.into()));
        arguments.insert("x-dead-letter-strategy".into(), AMQPValue::LongString("at-least-once".into()));
        arguments.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
        arguments.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(DELIVERY_LIMIT));
    }
    arguments
}

/// Declares `queue` as a quorum queue; a queue declared otherwise (a classic one) that
/// is already there is [`IncompatibleQueue`].
pub async fn declare_quorum_queue(channel: &Channel, queue: &str, arguments: FieldTable) -> anyhow::Result<()> {
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    match amqp_call("declare the queue", channel.queue_declare(queue, durable, arguments)).await {
        // RabbitMQ names the first argument that differs, whichever it is.
        Err(error) if format!("{error:#}").contains("inequivalent arg") => {
            Err(error.context(IncompatibleQueue { queue: queue.to_owned() }))
        }
        declared => declared.map(|_| ()),
    }
}

/// The task exchange and the dead-letter exchange.
pub async fn declare_exchanges(channel: &Channel, settings: &AmqpSettings) -> anyhow::Result<()> {
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    amqp_call(
        "declare the task exchange",
        channel.exchange_declare(&settings.exchange, ExchangeKind::Topic, durable, FieldTable::default()),
    )
    .await?;
    amqp_call(
        "declare the dead-letter exchange",
        channel.exchange_declare(
            &settings.dead_letter_exchange(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        ),
    )
    .await
    .map(|_| ())
}

pub async fn declare(channel: &Channel, settings: &AmqpSettings) -> anyhow::Result<()> {
    let dlx = settings.dead_letter_exchange();
    let dlq = settings.dead_letter_queue();
    declare_exchanges(channel, settings).await?;
    declare_quorum_queue(channel, &dlq, quorum_arguments(None)).await?;
    amqp_call(
        "bind the dead-letter queue",
        channel.queue_bind(&dlq, &dlx, "", QueueBindOptions::default(), FieldTable::default()),
    )
    .await?;

    declare_quorum_queue(channel, &settings.queue, quorum_arguments(Some(&dlx))).await?;
    amqp_call(
        "bind the queue",
        channel.queue_bind(
            &settings.queue,
            &settings.exchange,
            BINDING_KEY,
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    amqp_call("set the prefetch", channel.basic_qos(PREFETCH, BasicQosOptions::default())).await?;
    Ok(())
}
