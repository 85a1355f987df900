//! MongoDB and RabbitMQ outages, readiness, and a clean stop.

use std::time::Duration;

use serde_json::json;
use todo_test_support::eventually;

use crate::helpers::{
    assert_problem, backend_names, closed_port, skip_when_embedded, spawn_app, spawn_app_with, User, PATIENCE,
};

#[tokio::test]
async fn ready_when_every_backend_is_up() {
    let app = spawn_app().await;
    let body = eventually("every backend up", PATIENCE, || async {
        let (status, body) = app.readyz().await;
        (status == 200 && body["status"] == "ready").then_some(body)
    })
    .await;
    for backend in backend_names() {
        assert_eq!(body["backends"][backend]["status"], "up", "{body}");
    }
}

#[tokio::test]
async fn without_mongodb_calls_fail_fast_with_503_and_the_service_is_unready() {
    if skip_when_embedded("about a MongoDB outage") {
        return;
    }
    let port = closed_port().await;
    let app = spawn_app_with(&[("MONGODB_URI", &format!("mongodb://127.0.0.1:{port}"))]).await;
    let user = User::new();
    let (status, body) = app.readyz().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["backends"]["mongodb"]["status"], "down");

    assert_problem(app.create(&user, json!({ "title": "t" })).await, 503).await;
    assert_problem(app.list(&user, "").await, 503).await;
    let id = mongodb::bson::oid::ObjectId::new().to_hex();
    assert_problem(app.get_task(&user, &id).await, 503).await;
    assert_problem(app.complete(&user, &id).await, 503).await;
    assert_problem(app.patch(&user, &id, json!({ "title": "x" })).await, 503).await;
    assert_problem(app.delete(&user, &id).await, 503).await;
}

#[tokio::test]
async fn without_rabbitmq_writes_succeed_and_events_wait_in_the_outbox() {
    if skip_when_embedded("about a RabbitMQ outage") {
        return;
    }
    let port = closed_port().await;
    let app = spawn_app_with(&[("AMQP_URL", &format!("amqp://guest:guest@127.0.0.1:{port}/%2f"))]).await;
    let user = User::new();
    let task = app.created(&user, "kept").await;
    let id = task["id"].as_str().unwrap();
    assert_eq!(app.complete(&user, id).await.status(), 200);

    eventually("the relay to try and fail", PATIENCE, || async {
        (app.metric("events_publish_failed_total").await >= 1.0).then_some(())
    })
    .await;
    assert_eq!(app.outbox_len().await, 2, "both events are kept");
    eventually("the backlog gauge", PATIENCE, || async { (app.metric("outbox_backlog").await == 2.0).then_some(()) })
        .await;
    let (status, body) = app.readyz().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["backends"]["rabbitmq"]["status"], "degraded");
}

#[tokio::test]
async fn a_stopped_service_drains_and_stops_its_relay() {
    let app = spawn_app().await;
    let user = User::new();
    app.created(&user, "before stop").await;
    app.stop.cancel();
    tokio::time::timeout(Duration::from_secs(15), app.stopped).await.expect("stops in time").expect("no panic");
    assert!(tokio::net::TcpStream::connect(app.addr).await.is_err(), "no longer accepting");
}
