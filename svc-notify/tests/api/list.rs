//! GET /notifications: newest first, cursor pagination, query validation.

use std::collections::HashSet;

use chrono::{Duration, Utc};
use serde_json::Value;
use todo_test_support::{token_for, unique_name};

use crate::helpers::{spawn_app, TestApp, TestEvent};

/// Publishes `count` events for `owner`, one a minute apart, the last two at the same instant.
async fn publish_history(app: &TestApp, owner: &str, count: i64) -> Vec<TestEvent> {
    let start = chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap() - Duration::hours(1);
    let mut events = Vec::new();
    for i in 0..count {
        let at = start + Duration::minutes(i.min(count - 2));
        let event = TestEvent::new("task.created", owner, &format!("Task {i}")).at(at);
        app.publish(&event).await;
        events.push(event);
    }
    events
}

fn created_at(item: &Value) -> chrono::DateTime<Utc> {
    item["createdAt"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn pages_are_newest_first_and_cover_everything_exactly_once() {
    let app = spawn_app().await;
    let owner = unique_name("user");
    let events = publish_history(&app, &owner, 7).await;
    app.wait_for_notifications(&owner, 7).await;

    let mut seen = Vec::new();
    let mut page_sizes = Vec::new();
    let mut query = "?limit=3".to_owned();
    loop {
        let page = app.list(&owner, &query).await;
        let items = page["items"].as_array().unwrap().clone();
        page_sizes.push(items.len());
        seen.extend(items);
        match page["nextCursor"].as_str() {
            Some(cursor) => query = format!("?limit=3&cursor={cursor}"),
            None => break,
        }
    }

    assert_eq!(page_sizes, [3, 3, 1]);
    let ids: HashSet<&str> = seen.iter().map(|n| n["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 7, "no notification is shown twice");
    let times: Vec<_> = seen.iter().map(created_at).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first: {times:?}");
    let newest = events.iter().map(|e| e.occurred_at).max().unwrap();
    assert_eq!(times[0], newest);
    let tasks: HashSet<&str> = seen.iter().map(|n| n["taskId"].as_str().unwrap()).collect();
    let published: HashSet<&str> = events.iter().map(|e| e.task_id.as_str()).collect();
    assert_eq!(tasks, published);
}

#[tokio::test]
async fn the_default_page_holds_fifty() {
    let app = spawn_app().await;
    let owner = unique_name("user");
    publish_history(&app, &owner, 51).await;
    app.wait_for_notifications(&owner, 51).await;

    let first = app.list(&owner, "").await;
    assert_eq!(first["items"].as_array().unwrap().len(), 50);
    let cursor = first["nextCursor"].as_str().expect("a second page follows");
    let second = app.list(&owner, &format!("?cursor={cursor}")).await;
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert!(second["nextCursor"].is_null());
}

#[tokio::test]
async fn bad_query_values_are_400_with_field_errors() {
    let app = spawn_app().await;
    let token = token_for(&unique_name("user"));
    for (query, field) in [
        ("?unread=maybe", "unread"),
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?limit=ten", "limit"),
        ("?cursor=not-a-cursor", "cursor"),
        ("?cursor=123_zzzz", "cursor"),
        ("?colour=red", "colour"),
    ] {
        let response = app.get_notifications(Some(&token), query).await;
        assert_eq!(response.status(), 400, "{query}");
        assert_eq!(response.headers()["content-type"], "application/problem+json", "{query}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["status"], 400);
        assert_eq!(problem["errors"][0]["field"], field, "{query}: {problem}");
    }
}
