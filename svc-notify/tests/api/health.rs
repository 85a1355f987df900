//! /readyz: MongoDB is critical, the broker only degrades.

use todo_test_support::{eventually, token_for, unique_name, Backends};

use crate::helpers::{
    backend_names, closed_port, skip_when_embedded, spawn_app, spawn_app_with, OutageProxy, TestEvent, PATIENCE,
};

#[tokio::test]
async fn ready_when_both_backends_are_up() {
    let app = spawn_app().await;
    let (status, body) = app.readyz().await;
    assert_eq!(status, 200, "{body}");
    let (store, events) = backend_names();
    assert_eq!(body["backends"][store]["status"], "up");
    assert_eq!(body["backends"][events]["status"], "up");
}

#[tokio::test]
async fn unreachable_mongodb_makes_the_service_unready() {
    if skip_when_embedded("about a MongoDB outage") {
        return;
    }
    let uri = format!("mongodb://127.0.0.1:{}/?serverSelectionTimeoutMS=500", closed_port());
    let app = spawn_app_with(&[("MONGODB_URI", &uri)]).await;

    let (status, body) = app.readyz().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["backends"]["mongodb"]["status"], "down");

    let response = app.get_notifications(Some(&token_for(&unique_name("user"))), "").await;
    assert_eq!(response.status(), 503);
}

#[tokio::test]
async fn unreachable_broker_only_degrades() {
    if skip_when_embedded("about a RabbitMQ outage") {
        return;
    }
    let url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", closed_port());
    let app = spawn_app_with(&[("AMQP_URL", &url)]).await;

    let (status, body) = app.readyz().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["backends"]["mongodb"]["status"], "up");
    assert_eq!(body["backends"]["rabbitmq"]["status"], "degraded");
}

#[tokio::test]
async fn a_database_outage_delays_events_but_never_loses_or_dead_letters_them() {
    if skip_when_embedded("about a MongoDB outage and the RabbitMQ dead-letter queue") {
        return;
    }
    let mongodb = Backends::from_env().mongodb_uri;
    let target = mongodb.trim_start_matches("mongodb://").split(['/', '?']).next().unwrap().to_owned();
    let proxy = OutageProxy::start(&target).await;
    // directConnection keeps the driver on the proxy instead of the replica set's own address.
    let uri = format!("mongodb://{}/?directConnection=true", proxy.address);
    let app = spawn_app_with(&[("MONGODB_URI", &uri)]).await;
    app.wait_until_consuming().await;
    let owner = unique_name("user");

    proxy.cut_off();
    app.publish(&TestEvent::new("task.completed", &owner, "Survives the outage")).await;
    eventually("the event to be handed back for a retry", PATIENCE, || async {
        app.metric("events_retried_total").await.is_some_and(|n| n >= 1.0).then_some(())
    })
    .await;
    assert_eq!(app.readyz().await.0, 503, "unready while the database is away");

    proxy.restore();
    let items = app.wait_for_notifications(&owner, 1).await;
    assert_eq!(items[0]["message"], "Task \"Survives the outage\" was completed");
    assert_eq!(app.queue_depth(&app.dead_letter_queue()).await, 0, "nothing was dead-lettered");
    app.wait_for_metric("events_consumed_total", 1.0).await;
}
