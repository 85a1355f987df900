//! The Redis list cache: hits are counted, a read after a write is never stale, and a
//! Redis outage (also during a write) never shows stale lists or fails a call.

use std::net::SocketAddr;

use serde_json::{json, Value};
use todo_test_support::{eventually, Backends};

use crate::helpers::{
    closed_port, ids, outbox_drained, skip_when_embedded, spawn_app, spawn_app_with, CuttableProxy, TestApp, User,
    PATIENCE,
};

const HIT: &str = r#"cache_requests_total{result="hit"}"#;
const MISS: &str = r#"cache_requests_total{result="miss"}"#;
const ERROR: &str = r#"cache_requests_total{result="error"}"#;

fn titles_and_statuses(page: &Value) -> Vec<(String, String)> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["title"].as_str().unwrap().to_owned(), t["status"].as_str().unwrap().to_owned()))
        .collect()
}

async fn all(app: &TestApp, user: &User) -> Vec<(String, String)> {
    titles_and_statuses(&app.list_page(user, "").await)
}

#[tokio::test]
async fn a_repeated_read_is_a_cache_hit() {
    let app = spawn_app().await;
    let user = User::new();
    app.created(&user, "t").await;
    // The relay bumps the version again for the write; let it, so the reads below
    // see one version.
    outbox_drained(&app).await;
    let first = app.list_page(&user, "?limit=10").await;
    assert_eq!((app.metric(MISS).await, app.metric(HIT).await), (1.0, 0.0));
    let second = app.list_page(&user, "?limit=10").await;
    assert_eq!((app.metric(MISS).await, app.metric(HIT).await), (1.0, 1.0));
    assert_eq!(first, second);
    // Another query is another entry.
    app.list_page(&user, "?limit=11").await;
    assert_eq!(app.metric(MISS).await, 2.0);
}

#[tokio::test]
async fn a_read_after_each_write_sees_it() {
    let app = spawn_app().await;
    let user = User::new();
    assert!(all(&app, &user).await.is_empty());
    let id = app.created(&user, "first").await["id"].as_str().unwrap().to_owned();
    assert_eq!(all(&app, &user).await, [("first".into(), "open".into())]);
    assert_eq!(app.list_page(&user, "?status=open").await["items"].as_array().unwrap().len(), 1);

    app.patch(&user, &id, json!({ "title": "renamed" })).await;
    assert_eq!(all(&app, &user).await, [("renamed".into(), "open".into())]);
    app.complete(&user, &id).await;
    assert_eq!(all(&app, &user).await, [("renamed".into(), "completed".into())]);
    assert!(app.list_page(&user, "?status=open").await["items"].as_array().unwrap().is_empty());
    app.reopen(&user, &id).await;
    assert_eq!(all(&app, &user).await, [("renamed".into(), "open".into())]);
    app.delete(&user, &id).await;
    assert!(all(&app, &user).await.is_empty());
    assert!(app.metric(HIT).await + app.metric(MISS).await >= 8.0);
}

#[tokio::test]
async fn reads_racing_writes_never_leave_a_stale_list() {
    let app = spawn_app().await;
    let user = User::new();
    let mut expected: Vec<String> = Vec::new();
    for i in 0..20 {
        // Reads race the write; whatever they cache must not be seen by the read after it.
        let title = format!("task {i}");
        let (created, _, _, _) = tokio::join!(
            app.created(&user, &title),
            app.list(&user, "?limit=100"),
            app.list(&user, "?limit=100"),
            app.list(&user, "?limit=100"),
        );
        expected.insert(0, created["id"].as_str().unwrap().to_owned());
        assert_eq!(ids(&app.list_page(&user, "?limit=100").await), expected, "stale after write {i}");
        assert_eq!(ids(&app.list_page(&user, "?limit=100").await), expected, "stale on the next read {i}");

        let (completed, _, _) = tokio::join!(
            app.complete(&user, &expected[0]),
            app.list(&user, "?status=open&limit=100"),
            app.list(&user, "?status=open&limit=100"),
        );
        assert_eq!(completed.status(), 200);
        let open = app.list_page(&user, "?status=open&limit=100").await;
        assert!(!ids(&open).contains(&expected[0]), "completed task still listed as open after write {i}");
    }
    assert!(app.metric(HIT).await > 0.0, "the cache was in use");
}

#[tokio::test]
async fn without_redis_the_service_answers_from_mongodb() {
    if skip_when_embedded("about a Redis outage") {
        return;
    }
    let port = closed_port().await;
    let app = spawn_app_with(&[("REDIS_URL", &format!("redis://127.0.0.1:{port}"))]).await;
    let user = User::new();
    let task = app.created(&user, "still works").await;
    let page = app.list_page(&user, "").await;
    assert_eq!(page["items"], json!([task]));
    let id = task["id"].as_str().unwrap();
    assert_eq!(app.complete(&user, id).await.status(), 200);
    assert_eq!(app.list_page(&user, "").await["items"][0]["status"], "completed");
    assert!(app.metric(ERROR).await >= 2.0);
    assert_eq!(app.metric(HIT).await, 0.0);

    let (status, body) = app.readyz().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["backends"]["redis"]["status"], "degraded");
    assert_eq!(body["backends"]["mongodb"]["status"], "up");
}

#[tokio::test]
async fn a_write_made_while_redis_was_unreachable_invalidates_once_it_is_back() {
    if skip_when_embedded("about a Redis outage") {
        return;
    }
    let redis: SocketAddr = Backends::from_env()
        .redis_url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .parse()
        .expect("TEST_REDIS_URL is redis://host:port");
    let proxy = CuttableProxy::start(redis).await;
    let app = spawn_app_with(&[("REDIS_URL", &format!("redis://{}", proxy.addr))]).await;
    let user = User::new();
    let before = app.created(&user, "before").await["id"].as_str().unwrap().to_owned();
    // The relay bumps the version again for that write; let it first.
    outbox_drained(&app).await;
    app.list_page(&user, "").await;
    let cached = app.list_page(&user, "").await;
    assert_eq!(app.metric(HIT).await, 1.0, "the list is cached");
    assert_eq!(ids(&cached), std::slice::from_ref(&before));

    proxy.cut();
    let during = app.created(&user, "during the outage").await["id"].as_str().unwrap().to_owned();
    assert_eq!(ids(&app.list_page(&user, "").await), [during.clone(), before.clone()], "answered from MongoDB");
    proxy.restore();

    // The list cached before the write lives 60 s; well before that the relay's retried
    // version bump must hide it.
    eventually("the write to show once Redis is back", PATIENCE, || async {
        let page = app.list_page(&user, "").await;
        (ids(&page) == [during.clone(), before.clone()] && app.metric(HIT).await > 1.0).then_some(())
    })
    .await;
    crate::helpers::outbox_drained(&app).await;
}
