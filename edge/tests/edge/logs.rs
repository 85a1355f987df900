//! What the edge writes to its logs: never a credential, at any level.

use std::time::Duration;

use crate::helpers::*;

/// A request with a valid token and one with a bad token, through an edge logging at
/// `filter`; returns everything the process wrote.
async fn log_of_token_requests(filter: &str, token: &str) -> String {
    let users = Stub::start("users").await;
    let tasks = Stub::start("tasks").await;
    let policy = PolicyDir::new();
    write_policy(&policy.path, &[users.addr], &[tasks.addr]);
    let log = policy.path.join("edge.log");
    let edge = Edge::start_logging(&policy.path, &[("RUST_LOG", filter)], &log).await;
    let accepted = edge.client().get(edge.url("/tasks")).bearer_auth(token).send().await.expect("answer");
    assert_eq!(accepted.status(), 200);
    let refused = edge.client().get(edge.url("/tasks")).bearer_auth(format!("{token}x")).send().await.expect("answer");
    assert_eq!(refused.status(), 401);
    // Lines leave in batches at most 50 ms apart.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(edge);
    std::fs::read_to_string(&log).expect("log written")
}

#[tokio::test]
async fn no_bearer_token_appears_in_any_log_line_at_debug_level() {
    let token = token_for("log-reader");
    let signature = token.rsplit('.').next().expect("a signed token");

    // What an operator sets with the dev overlay: our debug lines, Pingora's pinned to info.
    let log = log_of_token_requests("debug", &token).await;
    assert!(!log.contains("Sending header to upstream"), "Pingora's debug lines are off:\n{log}");
    assert!(!log.contains(signature), "a token in the log:\n{log}");

    // Pingora's own debug lines asked for by name: they print whole request heads, with the
    // credentials hidden. (They also print bodies, a login answer's token included: why
    // Pingora stays at info unless named.)
    let log = log_of_token_requests("debug,pingora=debug", &token).await;
    let heads: Vec<&str> = log.lines().filter(|line| line.contains("Sending header to upstream")).collect();
    assert_eq!(heads.len(), 1, "one upstream request head printed:\n{log}");
    assert!(heads[0].contains("Sensitive"), "the authorization header is printed as hidden: {}", heads[0]);
    assert!(!heads[0].contains(signature), "a token in the log: {}", heads[0]);
}

#[tokio::test]
async fn development_mode_is_reported_on_stderr_in_the_log_metrics_and_readiness() {
    let users = Stub::start("users").await;
    let tasks = Stub::start("tasks").await;
    let policy = PolicyDir::new();
    write_policy(&policy.path, &[users.addr], &[tasks.addr]);
    let log = policy.path.join("edge.log");
    let edge = Edge::start_logging(&policy.path, &[("TODO_DEV_MODE", "1"), ("RUST_LOG", "info")], &log).await;
    assert_eq!(edge.metric("todo_dev_mode").await, Some(1.0));
    let readiness: serde_json::Value = edge.admin_get("/readyz").await.json().await.expect("readiness body");
    assert_eq!(readiness["devMode"], true, "{readiness}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(edge);
    let log = std::fs::read_to_string(&log).expect("log written");
    assert!(log.lines().any(|l| l.starts_with("warning: TODO_DEV_MODE=1")), "a plain line on stderr at start:\n{log}");
    assert!(log.lines().any(|l| l.contains("\"WARN\"") && l.contains("development mode")), "a log line:\n{log}");

    let world = World::start().await;
    assert_eq!(world.edge.metric("todo_dev_mode").await, Some(0.0));
}
