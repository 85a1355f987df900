//! `svc-notify --migrate-to-quorum`: the one-off move of an installation whose queues
//! are classic queues (svc-notify before quorum queues) to quorum queues of the same
//! names. A queue cannot change its type in place, so for the queue and then its
//! dead-letter queue, with svc-notify stopped:
//!
//! 1. a quorum queue `<name>.migrating` is declared and bound like the old one, so new
//!    events keep arriving somewhere;
//! 2. the old queue is unbound, its messages are moved over (each published with a
//!    confirm before it is acknowledged), and it is deleted once empty;
//! 3. the quorum queue `<name>` is declared and bound, `<name>.migrating` is unbound,
//!    drained into it and deleted.
//!
//! At every moment at least one queue is bound, and a message leaves a queue only once
//! the broker confirmed its copy: nothing is lost. Running it again finds quorum queues
//! and does nothing.

use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use todo_common::broker::BrokerNodes;

use super::topology::{self, amqp_call, quorum_arguments, IncompatibleQueue, BINDING_KEY};
use crate::config::AmqpSettings;

/// What a migration did, queue by queue: (queue, messages moved) for each one moved.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Migrated(pub Vec<(String, u32)>);

/// A queue and where its messages come from.
struct Source {
    queue: String,
    arguments: FieldTable,
    exchange: String,
    binding_key: &'static str,
}

pub async fn migrate_to_quorum(settings: &AmqpSettings) -> anyhow::Result<Migrated> {
    let connection = connect(settings).await?;
    let migrated = migrate_each(&connection, settings).await;
    let _ = amqp_call("close the connection", connection.close(200, "migration done")).await;
    migrated
}

async fn migrate_each(connection: &Connection, settings: &AmqpSettings) -> anyhow::Result<Migrated> {
    let channel = open_channel(connection).await?;
    topology::declare_exchanges(&channel, settings).await?;
    let dead_letter_exchange = settings.dead_letter_exchange();
    let sources = [
        Source {
            queue: settings.queue.clone(),
            arguments: quorum_arguments(Some(&dead_letter_exchange)),
            exchange: settings.exchange.clone(),
            binding_key: BINDING_KEY,
        },
        Source {
            queue: settings.dead_letter_queue(),
            arguments: quorum_arguments(None),
            exchange: dead_letter_exchange.clone(),
            binding_key: "",
        },
    ];
    let mut migrated = Migrated::default();
    for source in &sources {
        // A declaration that fails closes its channel: each probe gets a channel of its own.
        let probe = open_channel(connection).await?;
        match topology::declare_quorum_queue(&probe, &source.queue, source.arguments.clone()).await {
            Ok(()) => {
                let _ = amqp_call("close the channel", probe.close(200, "probed")).await;
                if staging_exists(connection, source).await? {
                    // An earlier run stopped between deleting the classic queue and
                    // draining the staging queue: finish its work.
                    let moved = finish_from_staging(connection, source).await?;
                    tracing::info!(queue = %source.queue, moved, "finished an interrupted migration");
                    migrated.0.push((source.queue.clone(), moved));
                } else {
                    tracing::info!(queue = %source.queue, "already a quorum queue");
                }
            }
            Err(error) if error.downcast_ref::<IncompatibleQueue>().is_some() => {
                let moved = migrate_one(connection, source).await?;
                tracing::info!(queue = %source.queue, moved, "moved to a quorum queue");
                migrated.0.push((source.queue.clone(), moved));
            }
            Err(error) => return Err(error),
        }
    }
    Ok(migrated)
}

async fn migrate_one(connection: &Connection, source: &Source) -> anyhow::Result<u32> {
    let channel = open_channel(connection).await?;
    let staging = staging_name(source);
    topology::declare_quorum_queue(&channel, &staging, source.arguments.clone()).await?;
    bind(&channel, &staging, source).await?;
    unbind(&channel, &source.queue, source).await?;
    let moved = move_messages(&channel, &source.queue, &staging).await?;
    delete_empty(&channel, &source.queue).await?;
    // A channel remembers the deleted classic queue under its name (RabbitMQ 3.10 fails
    // the channel on a publish to its quorum successor): the rest gets a new channel.
    let _ = amqp_call("close the channel", channel.close(200, "classic queue gone")).await;
    Ok(moved.max(finish_from_staging(connection, source).await?))
}

/// The quorum queue declared and bound, the staging queue unbound, drained into it and
/// deleted. Returns how many messages moved.
async fn finish_from_staging(connection: &Connection, source: &Source) -> anyhow::Result<u32> {
    let channel = open_channel(connection).await?;
    let staging = staging_name(source);
    topology::declare_quorum_queue(&channel, &source.queue, source.arguments.clone()).await?;
    bind(&channel, &source.queue, source).await?;
    unbind(&channel, &staging, source).await?;
    let moved = move_messages(&channel, &staging, &source.queue).await?;
    delete_drained_staging(&channel, &staging).await?;
    let _ = amqp_call("close the channel", channel.close(200, "migrated")).await;
    Ok(moved)
}

fn staging_name(source: &Source) -> String {
    format!("{}.migrating", source.queue)
}

/// Whether an earlier run left the staging queue (a failed passive declare closes its
/// channel, so it gets one of its own).
async fn staging_exists(connection: &Connection, source: &Source) -> anyhow::Result<bool> {
    let channel = open_channel(connection).await?;
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    let staging = staging_name(source);
    let declared = channel.queue_declare(&staging, passive, FieldTable::default());
    match tokio::time::timeout(topology::AMQP_CALL_TIMEOUT, declared).await {
        Ok(Ok(_)) => {
            let _ = amqp_call("close the channel", channel.close(200, "probed")).await;
            Ok(true)
        }
        Ok(Err(error)) if error.to_string().contains("NOT_FOUND") => Ok(false),
        Ok(Err(error)) => Err(anyhow::Error::new(error).context("look for a staging queue")),
        Err(_) => anyhow::bail!("look for a staging queue: no answer within {:?}", topology::AMQP_CALL_TIMEOUT),
    }
}

/// Moves every message of `from` to `to` through the default exchange: published, the
/// confirm awaited, then acknowledged. Returns how many moved.
async fn move_messages(channel: &Channel, from: &str, to: &str) -> anyhow::Result<u32> {
    let mut moved = 0;
    while let Some(message) = amqp_call("get a message", channel.basic_get(from, BasicGetOptions::default())).await? {
        let delivery = message.delivery;
        let confirm = amqp_call(
            "publish a moved message",
            channel.basic_publish("", to, BasicPublishOptions::default(), &delivery.data, delivery.properties.clone()),
        )
        .await?;
        match amqp_call("confirm a moved message", confirm).await? {
            Confirmation::Ack(_) => {}
            other => anyhow::bail!("the broker did not confirm a message moved to {to}: {other:?}"),
        }
        amqp_call("acknowledge a moved message", delivery.acker.ack(BasicAckOptions::default())).await?;
        moved += 1;
    }
    Ok(moved)
}

async fn bind(channel: &Channel, queue: &str, source: &Source) -> anyhow::Result<()> {
    let bind = channel.queue_bind(
        queue,
        &source.exchange,
        source.binding_key,
        QueueBindOptions::default(),
        FieldTable::default(),
    );
    amqp_call("bind a queue", bind).await
}

async fn unbind(channel: &Channel, queue: &str, source: &Source) -> anyhow::Result<()> {
    let unbind = channel.queue_unbind(queue, &source.exchange, source.binding_key, FieldTable::default());
    amqp_call("unbind a queue", unbind).await
}

/// Deletes the drained, unbound classic queue; the broker refuses if a message is left.
async fn delete_empty(channel: &Channel, queue: &str) -> anyhow::Result<()> {
    let delete = channel.queue_delete(queue, QueueDeleteOptions { if_empty: true, ..Default::default() });
    amqp_call("delete an emptied queue", delete).await.map(|_| ())
}

/// Deletes the drained, unbound staging queue. Quorum queues have no `if-empty`
/// delete: it is checked empty first, and nothing can reach it once unbound.
async fn delete_drained_staging(channel: &Channel, queue: &str) -> anyhow::Result<()> {
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    let left = amqp_call("count a queue", channel.queue_declare(queue, passive, FieldTable::default())).await?;
    anyhow::ensure!(left.message_count() == 0, "{queue} still holds {} messages; it is kept", left.message_count());
    amqp_call("delete the staging queue", channel.queue_delete(queue, QueueDeleteOptions::default())).await.map(|_| ())
}

async fn open_channel(connection: &Connection) -> anyhow::Result<Channel> {
    let channel = amqp_call("open a channel", connection.create_channel()).await?;
    amqp_call("turn on publisher confirms", channel.confirm_select(ConfirmSelectOptions::default())).await?;
    Ok(channel)
}

async fn connect(settings: &AmqpSettings) -> anyhow::Result<Connection> {
    let nodes = BrokerNodes::new(settings.urls.clone());
    let (_, connection) =
        nodes.connect(|url| super::connect_to(url, "svc-notify-migration")).await.map_err(anyhow::Error::msg)?;
    Ok(connection)
}
