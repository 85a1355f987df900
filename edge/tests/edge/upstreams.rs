use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;

async fn start_two_task_addresses() -> (Stub, Stub, Stub, PolicyDir, Edge) {
    todo_common::telemetry::init_for_tests();
    let users = Stub::start("users").await;
    let a = Stub::start("tasks-a").await;
    let b = Stub::start("tasks-b").await;
    let policy = PolicyDir::new();
    write_policy(&policy.path, &[users.addr], &[a.addr, b.addr]);
    let edge = Edge::start_with(&policy.path, &[], "/readyz").await;
    (users, a, b, policy, edge)
}

async fn served_by(edge: &Edge) -> (u16, Option<String>) {
    let response = edge.get_as("/tasks/1", "alice").await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, body["upstream"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn addresses_are_balanced_and_a_dead_one_leaves_rotation_without_client_errors() {
    let (_users, a, b, _policy, edge) = start_two_task_addresses().await;
    let mut seen = BTreeSet::new();
    for _ in 0..6 {
        let (status, upstream) = served_by(&edge).await;
        assert_eq!(status, 200);
        seen.insert(upstream.unwrap());
    }
    assert_eq!(seen.len(), 2, "round-robin over both addresses: {seen:?}");

    a.kill();
    // Right away, before any health check noticed: a failed connect is retried elsewhere.
    for i in 0..30 {
        let (status, upstream) = served_by(&edge).await;
        assert_eq!((status, upstream.as_deref()), (200, Some("tasks-b")), "request {i} after the kill");
    }
    eventually("the health check takes the dead address out", Duration::from_secs(3), || async {
        let body: Value = edge.admin_get("/readyz").await.json().await.ok()?;
        (body["backends"]["upstream:tasks"]["healthy"] == 1).then_some(())
    })
    .await;
    assert_eq!(edge.admin_get("/readyz").await.status(), 200, "one healthy address keeps the edge ready");
    drop(b);
}

#[tokio::test]
async fn with_every_address_down_the_edge_answers_502_or_503_quickly() {
    let (_users, a, b, _policy, edge) = start_two_task_addresses().await;
    a.kill();
    b.kill();
    let started = Instant::now();
    let response = edge.get_as("/tasks/1", "alice").await;
    let status = response.status().as_u16();
    assert!(status == 502 || status == 503, "{status}");
    assert_edge_headers(&response, "all upstream addresses down");
    problem(response, status).await;
    eprintln!("answer with every address down took {:?}", started.elapsed());

    eventually("readiness reports the upstream down", Duration::from_secs(3), || async {
        let response = edge.admin_get("/readyz").await;
        let status = response.status();
        let body: Value = response.json().await.ok()?;
        (status == 503 && body["backends"]["upstream:tasks"]["status"] == "down").then_some(())
    })
    .await;
    let response = edge.get_as("/tasks/1", "alice").await;
    let body = problem(response, 503).await;
    assert!(body["detail"].as_str().unwrap().contains("tasks"), "{body}");
}

#[tokio::test]
async fn a_broken_connection_is_502_and_a_slow_upstream_504() {
    let world = World::start().await;
    let response = world.edge.get_as("/tasks/broken", "alice").await;
    problem(response, 502).await;
    let started = Instant::now();
    let response = world.edge.get_as("/tasks/slow", "alice").await;
    problem(response, 504).await;
    eprintln!("504 after {:?} (read_timeout_ms = 500)", started.elapsed());
}

#[tokio::test]
async fn host_names_in_addresses_are_resolved() {
    todo_common::telemetry::init_for_tests();
    let users = Stub::start("users").await;
    let tasks = Stub::start("tasks").await;
    let policy = PolicyDir::new();
    write_policy(&policy.path, &[users.addr], &[tasks.addr]);
    let by_name = upstreams_toml(&[users.addr], &[tasks.addr])
        .replace(&format!("\"{}\"", users.addr), &format!("\"localhost:{}\"", users.addr.port()));
    assert!(by_name.contains("localhost:"), "{by_name}");
    policy.write("upstreams.toml", &by_name);
    let edge = Edge::start(&policy.path, &[]).await;
    let response = edge.client().post(edge.url("/users/register")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(users.hits(), 1);
}
