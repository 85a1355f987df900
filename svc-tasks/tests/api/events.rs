//! Task events on a real queue bound to the test's own exchange.

use futures::future::join_all;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{outbox_drained, spawn_app, ReceivedEvent, TestApp, User};

async fn send(app: &TestApp, user: &User, method: Method, path: &str, request_id: &str, body: Option<Value>) -> Value {
    let mut request = app.request(method, path, user).header("x-request-id", request_id);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    assert!(response.status().is_success(), "{path}: {}", response.status());
    assert_eq!(response.headers()["x-request-id"], request_id);
    response.json().await.unwrap_or(Value::Null)
}

fn assert_event(event: &ReceivedEvent, kind: &str, user: &User, task_id: &str, request_id: &str, title: &str) {
    assert_eq!(event.kind(), kind);
    assert_eq!(event.routing_key, kind);
    let body = &event.body;
    assert_eq!(body["userId"], user.id.as_str());
    assert_eq!(body["taskId"], task_id);
    assert_eq!(body["requestId"], request_id);
    assert_eq!(body["data"]["title"], title);
    assert!(chrono::DateTime::parse_from_rfc3339(body["occurredAt"].as_str().unwrap()).is_ok());
    let id = body["id"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "event id is a uuid: {id}");

    assert_eq!(event.message_id.as_deref(), Some(id));
    assert_eq!(event.correlation_id.as_deref(), Some(request_id));
    let Some(properties) = &event.properties else {
        return; // the in-process bus carries no AMQP properties
    };
    assert_eq!(properties.content_type().as_ref().map(|s| s.as_str()), Some("application/json"));
    assert_eq!(*properties.delivery_mode(), Some(2), "persistent");
    assert_eq!(properties.kind().as_ref().map(|s| s.as_str()), Some(kind));
    assert!(properties.timestamp().is_some_and(|t| t > 1_600_000_000));
}

#[tokio::test]
async fn every_write_publishes_its_event_with_the_request_id() {
    let app = spawn_app().await;
    let mut queue = app.event_queue().await;
    let user = User::new();

    let task = send(
        &app,
        &user,
        Method::POST,
        "/tasks",
        "req-create",
        Some(json!({ "title": "Buy milk", "priority": "high" })),
    )
    .await;
    let id = task["id"].as_str().unwrap().to_owned();
    let path = format!("/tasks/{id}");
    send(&app, &user, Method::PATCH, &path, "req-update", Some(json!({ "title": "Buy oat milk" }))).await;
    send(&app, &user, Method::POST, &format!("{path}/complete"), "req-complete", None).await;
    send(&app, &user, Method::POST, &format!("{path}/reopen"), "req-reopen", None).await;
    send(&app, &user, Method::DELETE, &path, "req-delete", None).await;

    let events = queue.until(|e| e.kind() == "task.deleted").await;
    assert_eq!(events.len(), 5, "{events:#?}");
    assert_event(&events[0], "task.created", &user, &id, "req-create", "Buy milk");
    assert_eq!(events[0].body["data"]["priority"], "high");
    assert_eq!(events[0].body["data"]["status"], "open");
    assert_event(&events[1], "task.updated", &user, &id, "req-update", "Buy oat milk");
    assert_event(&events[2], "task.completed", &user, &id, "req-complete", "Buy oat milk");
    assert_eq!(events[2].body["data"]["status"], "completed");
    assert_event(&events[3], "task.reopened", &user, &id, "req-reopen", "Buy oat milk");
    assert_eq!(events[3].body["data"]["status"], "open");
    assert_event(&events[4], "task.deleted", &user, &id, "req-delete", "Buy oat milk");
    let event_ids: std::collections::HashSet<_> = events.iter().map(|e| e.body["id"].clone()).collect();
    assert_eq!(event_ids.len(), 5, "each event has its own id");

    outbox_drained(&app).await;
    assert!(app.metric("events_published_total").await >= 5.0);
    // The relay sets the gauge after its pass, a moment after the last entry is gone.
    todo_test_support::eventually("the backlog gauge to reach 0", crate::helpers::PATIENCE, || async {
        (app.metric("outbox_backlog").await == 0.0).then_some(())
    })
    .await;
    queue.delete().await;
}

#[tokio::test]
async fn concurrent_completes_publish_exactly_one_event() {
    let app = spawn_app().await;
    let mut queue = app.event_queue().await;
    let user = User::new();
    let id = app.created(&user, "race").await["id"].as_str().unwrap().to_owned();

    let responses = join_all((0..8).map(|_| app.complete(&user, &id))).await;
    let mut completed_at = std::collections::HashSet::new();
    for response in responses {
        assert_eq!(response.status(), 200);
        let task: Value = response.json().await.unwrap();
        assert_eq!(task["status"], "completed");
        completed_at.insert(task["completedAt"].as_str().unwrap().to_owned());
    }
    assert_eq!(completed_at.len(), 1, "one completion, seen by every caller");

    // The relay publishes in outbox order, so the marker comes after any completion event.
    app.patch(&user, &id, json!({ "title": "marker" })).await;
    let events = queue.until(|e| e.kind() == "task.updated").await;
    let kinds: Vec<&str> = events.iter().map(ReceivedEvent::kind).collect();
    assert_eq!(kinds, ["task.created", "task.completed", "task.updated"]);
    queue.delete().await;
}

#[tokio::test]
async fn completing_a_completed_task_or_reopening_an_open_one_publishes_nothing() {
    let app = spawn_app().await;
    let mut queue = app.event_queue().await;
    let user = User::new();
    let id = app.created(&user, "t").await["id"].as_str().unwrap().to_owned();
    assert_eq!(app.reopen(&user, &id).await.status(), 200);
    assert_eq!(app.complete(&user, &id).await.status(), 200);
    assert_eq!(app.complete(&user, &id).await.status(), 200);
    assert_eq!(app.complete(&user, &id).await.status(), 200);
    app.patch(&user, &id, json!({ "title": "marker" })).await;

    let events = queue.until(|e| e.kind() == "task.updated").await;
    let kinds: Vec<&str> = events.iter().map(ReceivedEvent::kind).collect();
    assert_eq!(kinds, ["task.created", "task.completed", "task.updated"]);
    assert!(events.iter().all(|e| e.task_id() == id));
    queue.delete().await;
}

#[tokio::test]
async fn the_relay_can_be_drained_directly() {
    let app = spawn_app().await;
    let user = User::new();
    app.created(&user, "t").await;
    // The background relay may hold the entry's lease for a moment; a direct drain takes
    // whatever is claimable, and once the outbox is empty there is nothing to claim.
    todo_test_support::eventually("a direct drain to empty the outbox", crate::helpers::PATIENCE, || async {
        app.relay.relay_pending().await.expect("outbox readable");
        (app.outbox_len().await == 0).then_some(())
    })
    .await;
    assert_eq!(app.relay.process_one().await.expect("outbox readable"), svc_tasks::outbox::RelayOutcome::Empty);
}

/// During a rolling update, entries the previous release wrote (its event fields at the
/// document's top level, `occurredAt` a BSON date) are published by this one.
#[tokio::test]
async fn an_outbox_entry_the_previous_release_wrote_is_published() {
    if crate::helpers::skip_when_embedded("about the MongoDB outbox's document") {
        return;
    }
    use mongodb::bson::{doc, oid::ObjectId, DateTime};
    let app = spawn_app().await;
    let mut queue = app.event_queue().await;
    let event_id = uuid::Uuid::new_v4().to_string();
    let occurred_at = DateTime::from_millis(1_700_000_000_123);
    let body = json!({
        "id": event_id, "type": "task.created", "occurredAt": "2023-11-14T22:13:20.123Z", "userId": "legacy-user",
        "taskId": ObjectId::new().to_hex(), "requestId": "req-legacy",
        "data": { "title": "written before", "status": "open", "priority": "medium", "dueDate": null },
    });
    let now = DateTime::now();
    let client = mongodb::Client::with_uri_str(app.config.mongodb.uri.expose()).await.unwrap();
    client
        .database(&app.config.mongodb.database)
        .collection("outbox")
        .insert_one(doc! {
            "_id": ObjectId::new(), "eventId": &event_id, "routingKey": "task.created", "userId": "legacy-user",
            "correlationId": "req-legacy", "occurredAt": occurred_at, "payload": body.to_string(),
            "needsPublish": true, "needsInvalidate": true, "leaseUntil": now, "leaseOwner": null, "attempts": 0,
            "createdAt": now,
        })
        .await
        .unwrap();

    let events = queue.until(|e| e.body["id"] == event_id.as_str()).await;
    let event = events.last().unwrap();
    assert_eq!(
        (event.routing_key.as_str(), event.body["data"]["title"].as_str()),
        ("task.created", Some("written before"))
    );
    assert_eq!(event.message_id.as_deref(), Some(event_id.as_str()));
    let timestamp = event.properties.as_ref().and_then(|p| *p.timestamp());
    assert_eq!(timestamp, Some(1_700_000_000), "the AMQP timestamp is the entry's occurredAt");
    outbox_drained(&app).await;
    queue.delete().await;
}
