//! POST /notifications/{id}/read and the unread filter.

use serde_json::Value;
use todo_test_support::{token_for, unique_name};

use crate::helpers::{spawn_app, TestEvent};

fn ids(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn marking_read_is_idempotent_and_the_unread_filter_follows() {
    let app = spawn_app().await;
    let owner = unique_name("user");
    let token = token_for(&owner);
    app.publish(&TestEvent::new("task.created", &owner, "First")).await;
    app.publish(&TestEvent::new("task.completed", &owner, "Second")).await;
    let items = app.wait_for_notifications(&owner, 2).await;
    let target = items[0]["id"].as_str().unwrap().to_owned();
    let other = items[1]["id"].as_str().unwrap().to_owned();
    assert_eq!(ids(&app.list(&owner, "?unread=true").await).len(), 2);
    assert!(ids(&app.list(&owner, "?unread=false").await).is_empty());

    for attempt in 0..2 {
        let response = app.mark_read(Some(&token), &target).await;
        assert_eq!(response.status(), 200, "attempt {attempt}");
        let notification: Value = response.json().await.unwrap();
        assert_eq!(notification["id"], target.as_str());
        assert_eq!(notification["read"], true);
        assert_eq!(notification["message"], items[0]["message"]);
    }

    assert_eq!(ids(&app.list(&owner, "?unread=true").await), [other]);
    assert_eq!(ids(&app.list(&owner, "?unread=false").await), [target]);
    let all = app.list(&owner, "").await;
    let read: Vec<bool> = all["items"].as_array().unwrap().iter().map(|n| n["read"].as_bool().unwrap()).collect();
    assert_eq!(read, [true, false]);
}

#[tokio::test]
async fn another_users_malformed_or_unknown_id_is_404() {
    let app = spawn_app().await;
    let owner = unique_name("user");
    app.publish(&TestEvent::new("task.created", &owner, "Mine")).await;
    let items = app.wait_for_notifications(&owner, 1).await;
    let mine = items[0]["id"].as_str().unwrap();
    let intruder = token_for(&unique_name("user"));

    for id in [mine, "not-an-id", "65f0c0ffee65f0c0ffee65f0"] {
        let response = app.mark_read(Some(&intruder), id).await;
        assert_eq!(response.status(), 404, "{id}");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
    }
    let page = app.list(&owner, "").await;
    assert_eq!(page["items"][0]["read"], false, "the intruder changed nothing");
}
