//! Events in, notifications out: exactly once per event id, poison to the DLQ.

use lapin::BasicProperties;
use serde_json::{json, Value};
use todo_test_support::{eventually, unique_name};

use crate::helpers::{embedded, spawn_app, TestEvent, PATIENCE};

#[tokio::test]
async fn an_event_becomes_a_notification_for_its_owner_only() {
    let app = spawn_app().await;
    let owner = unique_name("user");
    let event = TestEvent::new("task.completed", &owner, "Buy milk");

    app.publish(&event).await;

    let items = app.wait_for_notifications(&owner, 1).await;
    assert_eq!(items.len(), 1);
    let notification = &items[0];
    assert_eq!(notification["type"], "task.completed");
    assert_eq!(notification["message"], "Task \"Buy milk\" was completed");
    assert_eq!(notification["taskId"], event.task_id.as_str());
    assert_eq!(notification["createdAt"], event.occurred_at_text().as_str());
    assert_eq!(notification["read"], false);
    assert!(notification["id"].as_str().is_some_and(|id| !id.is_empty()));
    let fields: Vec<&String> = notification.as_object().unwrap().keys().collect();
    assert_eq!(fields.len(), 6, "exactly the contract's fields: {fields:?}");

    let stranger = app.list(&unique_name("user"), "").await;
    assert_eq!(stranger, json!({"items": [], "nextCursor": null}));
    app.wait_for_metric("events_consumed_total", 1.0).await;
}

#[tokio::test]
async fn every_event_type_reads_as_a_sentence() {
    let app = spawn_app().await;
    let owner = unique_name("user");
    for kind in ["task.created", "task.updated", "task.completed", "task.reopened", "task.deleted"] {
        app.publish(&TestEvent::new(kind, &owner, "Water plants")).await;
    }

    let items = app.wait_for_notifications(&owner, 5).await;
    let mut messages: Vec<(String, String)> = items
        .iter()
        .map(|n| (n["type"].as_str().unwrap().to_owned(), n["message"].as_str().unwrap().to_owned()))
        .collect();
    messages.sort();
    let expected: Vec<(String, String)> = ["completed", "created", "deleted", "reopened", "updated"]
        .iter()
        .map(|verb| (format!("task.{verb}"), format!("Task \"Water plants\" was {verb}")))
        .collect();
    assert_eq!(messages, expected);
}

#[tokio::test]
async fn the_same_event_twice_gives_one_notification() {
    let app = spawn_app().await;
    let owner = unique_name("user");
    let event = TestEvent::new("task.created", &owner, "Once only");

    app.publish(&event).await;
    app.publish(&event).await;

    app.wait_for_metric("events_duplicate_total", 1.0).await;
    let page = app.list(&owner, "").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(app.metric("events_consumed_total").await, Some(1.0));
}

#[tokio::test]
async fn poison_goes_to_the_dead_letter_queue_and_the_next_message_is_processed() {
    let app = spawn_app().await;
    let owner = unique_name("user");
    let json_props = || BasicProperties::default().with_content_type("application/json".into()).with_delivery_mode(2);

    let not_json = b"this is not JSON".to_vec();
    let unknown_type = TestEvent::new("task.exploded", &owner, "Boom").body();
    let mut without_title: Value = serde_json::from_slice(&TestEvent::new("task.created", &owner, "x").body()).unwrap();
    without_title["data"] = json!({"status": "open"});
    let without_title = without_title.to_string().into_bytes();
    app.publish_raw("task.created", &not_json, json_props()).await;
    app.publish_raw("task.exploded", &unknown_type, json_props()).await;
    app.publish_raw("task.updated", &without_title, json_props()).await;
    let good = TestEvent::new("task.completed", &owner, "Still works");
    app.publish(&good).await;

    let items = app.wait_for_notifications(&owner, 1).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["message"], "Task \"Still works\" was completed");

    assert_eq!(app.metric(r#"events_dead_lettered_total{reason="not_json"}"#).await, Some(1.0));
    assert_eq!(app.metric(r#"events_dead_lettered_total{reason="unknown_type"}"#).await, Some(1.0));
    assert_eq!(app.metric(r#"events_dead_lettered_total{reason="bad_shape"}"#).await, Some(1.0));
    if embedded() {
        eprintln!("dead-letter queue checks skipped under TEST_BACKEND=embedded: the in-process bus has none");
        return;
    }
    let dlq = app.dead_letter_queue();
    let mut dead = Vec::new();
    for n in 1..=3 {
        dead.push(eventually(&format!("dead letter {n}"), PATIENCE, || app.take_message(&dlq)).await);
    }
    assert_eq!(dead, vec![not_json, unknown_type, without_title], "dead-lettered unchanged, in order");
    assert_eq!(app.queue_depth(&app.queue).await, 0, "nothing is left looping in the queue");
}

#[tokio::test]
async fn after_shutdown_events_wait_in_the_queue() {
    let mut app = spawn_app().await;
    let owner = unique_name("user");

    app.stop().await;
    if let Some(embedded) = &app.embedded {
        // In-process, "waiting in the queue" is the publisher keeping the event: the
        // publish fails, so svc-tasks leaves it in its outbox.
        let event = TestEvent::new("task.created", &owner, "Later");
        let message = todo_common::bus::BusMessage {
            event_id: event.id.clone(),
            routing_key: event.kind.clone(),
            correlation_id: None,
            traceparent: None,
            payload: String::from_utf8(event.body()).unwrap(),
        };
        assert!(embedded.bus.publish(message).await.is_err(), "a stopped consumer settles nothing");
        return;
    }
    app.publish(&TestEvent::new("task.created", &owner, "Later")).await;

    eventually("the event to wait in the queue", PATIENCE, || async {
        (app.queue_depth(&app.queue).await == 1).then_some(())
    })
    .await;
}
