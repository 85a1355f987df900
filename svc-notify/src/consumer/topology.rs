//! The broker objects this consumer relies on, declared (idempotently) on every
//! connect so a fresh or restarted broker is set up without an operator:
//! the task exchange, our durable queue bound with `task.*` and dead-lettering to
//! `<queue>.dlx`, a fanout exchange feeding the durable `<queue>.dlq`.

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

pub async fn declare(channel: &Channel, settings: &AmqpSettings) -> anyhow::Result<()> {
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    let dlx = settings.dead_letter_exchange();
    let dlq = settings.dead_letter_queue();

    amqp_call(
        "declare the task exchange",
        channel.exchange_declare(&settings.exchange, ExchangeKind::Topic, durable, FieldTable::default()),
    )
    .await?;
    amqp_call(
        "declare the dead-letter exchange",
        channel.exchange_declare(&dlx, ExchangeKind::Fanout, durable, FieldTable::default()),
    )
    .await?;
    let durable_queue = QueueDeclareOptions { durable: true, ..Default::default() };
    amqp_call("declare the dead-letter queue", channel.queue_declare(&dlq, durable_queue, FieldTable::default()))
        .await?;
    amqp_call(
        "bind the dead-letter queue",
        channel.queue_bind(&dlq, &dlx, "", QueueBindOptions::default(), FieldTable::default()),
    )
    .await?;

    let mut arguments = FieldTable::default();
    arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(dlx.as_str().into()));
    amqp_call("declare the queue", channel.queue_declare(&settings.queue, durable_queue, arguments)).await?;
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
