//! Quorum queues: an installation of the classic-queue era is refused with a clear
//! reason, then moved by `--migrate-to-quorum` without losing a message.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions};
use lapin::options::{ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use svc_notify::config::AmqpSettings;
use todo_common::broker::BrokerUrls;
use todo_test_support::{unique_name, Backends};

use crate::helpers::{skip_when_embedded, spawn_app_with, TestEvent};

/// The broker objects svc-notify declared before quorum queues, holding `events` in its
/// queue and one dead letter.
async fn classic_installation(amqp_url: &str, exchange: &str, queue: &str, events: &[TestEvent]) {
    let connection = Connection::connect(amqp_url, ConnectionProperties::default()).await.expect("broker");
    let channel = connection.create_channel().await.expect("channel");
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    let (dlx, dlq) = (format!("{queue}.dlx"), format!("{queue}.dlq"));
    channel.exchange_declare(exchange, ExchangeKind::Topic, durable, FieldTable::default()).await.unwrap();
    channel.exchange_declare(&dlx, ExchangeKind::Fanout, durable, FieldTable::default()).await.unwrap();
    let classic = QueueDeclareOptions { durable: true, ..Default::default() };
    channel.queue_declare(&dlq, classic, FieldTable::default()).await.unwrap();
    channel.queue_bind(&dlq, &dlx, "", QueueBindOptions::default(), FieldTable::default()).await.unwrap();
    let mut arguments = FieldTable::default();
    arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(dlx.as_str().into()));
    channel.queue_declare(queue, classic, arguments).await.unwrap();
    channel.queue_bind(queue, exchange, "task.*", QueueBindOptions::default(), FieldTable::default()).await.unwrap();
    for event in events {
        let (properties, body) = (event.properties(), event.body());
        let publish = channel.basic_publish(exchange, &event.kind, BasicPublishOptions::default(), &body, properties);
        assert!(publish.await.unwrap().await.unwrap().is_ack());
    }
    let poison = channel.basic_publish(&dlx, "", BasicPublishOptions::default(), b"poison", BasicProperties::default());
    assert!(poison.await.unwrap().await.unwrap().is_ack());
    let _ = connection.close(200, "set up").await;
}

async fn remove(amqp_url: &str, exchange: &str, queue: &str) {
    let Ok(connection) = Connection::connect(amqp_url, ConnectionProperties::default()).await else { return };
    if let Ok(channel) = connection.create_channel().await {
        for name in [queue.to_owned(), format!("{queue}.dlq"), format!("{queue}.migrating")] {
            let _ = channel.queue_delete(&name, QueueDeleteOptions::default()).await;
        }
        for name in [exchange.to_owned(), format!("{queue}.dlx")] {
            let _ = channel.exchange_delete(&name, ExchangeDeleteOptions::default()).await;
        }
    }
}

#[tokio::test]
async fn a_classic_installation_is_refused_then_migrated_without_losing_a_message() {
    if skip_when_embedded("queue types are RabbitMQ's") {
        return;
    }
    let backends = Backends::from_env();
    let (exchange, queue) = (unique_name("notify_classic_exchange"), unique_name("notify_classic"));
    let owner = unique_name("user");
    let events: Vec<TestEvent> = ["Buy milk", "Water plants", "Call mum"]
        .iter()
        .map(|title| TestEvent::new("task.completed", &owner, title))
        .collect();
    classic_installation(&backends.amqp_url, &exchange, &queue, &events).await;
    let names = [("AMQP_EXCHANGE", exchange.as_str()), ("AMQP_QUEUE", queue.as_str())];

    let mut refused = spawn_app_with(&names).await;
    let reason = format!("{:#}", refused.stopped_by_itself().await.expect_err("a classic queue is refused"));
    assert!(reason.contains("classic queue") && reason.contains("--migrate-to-quorum"), "{reason}");

    let settings = AmqpSettings {
        urls: BrokerUrls::parse(&backends.amqp_url).unwrap(),
        exchange: exchange.clone(),
        queue: queue.clone(),
    };
    let migrated = svc_notify::consumer::migrate_to_quorum(&settings).await.expect("the migration runs");
    assert_eq!(migrated.0, [(queue.clone(), 3), (format!("{queue}.dlq"), 1)]);
    let again = svc_notify::consumer::migrate_to_quorum(&settings).await.expect("a second run is harmless");
    assert!(again.0.is_empty(), "{again:?}");

    let app = spawn_app_with(&names).await;
    app.wait_until_consuming().await;
    let items = app.wait_for_notifications(&owner, 3).await;
    assert_eq!(items.len(), 3, "every event waiting in the classic queue became a notification");
    assert_eq!(app.queue_depth(&format!("{queue}.dlq")).await, 1, "the dead letter was kept");
    drop(app);
    drop(refused);
    remove(&backends.amqp_url, &exchange, &queue).await;
}

#[tokio::test]
async fn a_migration_interrupted_after_the_classic_queue_went_is_finished_by_the_next_run() {
    if skip_when_embedded("queue types are RabbitMQ's") {
        return;
    }
    let backends = Backends::from_env();
    let (exchange, queue) = (unique_name("notify_interrupted_exchange"), unique_name("notify_interrupted"));
    let owner = unique_name("user");
    let events: Vec<TestEvent> =
        ["Buy milk", "Call mum"].iter().map(|title| TestEvent::new("task.completed", &owner, title)).collect();
    // What a run that died halfway leaves: the classic queue gone, its messages in the
    // bound staging queue, the dead-letter queue already migrated.
    let settings = AmqpSettings {
        urls: BrokerUrls::parse(&backends.amqp_url).unwrap(),
        exchange: exchange.clone(),
        queue: queue.clone(),
    };
    let connection = Connection::connect(&backends.amqp_url, ConnectionProperties::default()).await.expect("broker");
    let channel = connection.create_channel().await.expect("channel");
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    channel.exchange_declare(&exchange, ExchangeKind::Topic, durable, FieldTable::default()).await.unwrap();
    let staging = format!("{queue}.migrating");
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    let quorum = QueueDeclareOptions { durable: true, ..Default::default() };
    channel.queue_declare(&staging, quorum, arguments).await.unwrap();
    channel
        .queue_bind(&staging, &exchange, "task.*", QueueBindOptions::default(), FieldTable::default())
        .await
        .unwrap();
    for event in &events {
        let (properties, body) = (event.properties(), event.body());
        let publish = channel.basic_publish(&exchange, &event.kind, BasicPublishOptions::default(), &body, properties);
        assert!(publish.await.unwrap().await.unwrap().is_ack());
    }
    let _ = connection.close(200, "set up").await;

    let migrated = svc_notify::consumer::migrate_to_quorum(&settings).await.expect("the migration runs");
    assert!(migrated.0.contains(&(queue.clone(), 2)), "{migrated:?}");
    let app = spawn_app_with(&[("AMQP_EXCHANGE", exchange.as_str()), ("AMQP_QUEUE", queue.as_str())]).await;
    app.wait_until_consuming().await;
    assert_eq!(app.wait_for_notifications(&owner, 2).await.len(), 2);
    drop(app);
    remove(&backends.amqp_url, &exchange, &queue).await;
}
