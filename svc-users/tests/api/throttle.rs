//! Per-account login throttling: 5 failures per e-mail, then 429 until 15 minutes after
//! the first; the same for unknown e-mails; reset by a success; shared by replicas;
//! skipped (never failed) when Redis is away.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use todo_test_support::net::closed_port;

use crate::fresh_email;
use crate::helpers::{assert_problem, skip_when_embedded, spawn_app, spawn_app_with, TestApp};

const PASSWORD: &str = "s3cret-pass";
const GUESSES: usize = 5;
const PERIOD_SECONDS: u64 = 15 * 60;

async fn registered(app: &TestApp) -> String {
    let email = fresh_email();
    assert_eq!(app.register(json!({ "email": email, "password": PASSWORD })).await.status(), 201);
    email
}

/// Status, body and headers (without the date) of one login.
async fn answer(app: &TestApp, email: &str, password: &str) -> (u16, BTreeMap<String, String>, Value) {
    let response = app.login(email, password).await;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "date" | "x-request-id"))
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap_or_default().to_owned()))
        .collect();
    (status, headers, response.json().await.unwrap_or(Value::Null))
}

fn retry_after(headers: &BTreeMap<String, String>) -> u64 {
    headers.get("retry-after").expect("Retry-After").parse().expect("seconds")
}

#[tokio::test]
async fn five_failures_lock_the_account_even_for_the_right_password() {
    let app = spawn_app().await;
    let email = registered(&app).await;
    for _ in 0..GUESSES {
        assert_problem(app.login(&email, "wrong-pass").await, 401).await;
    }
    let refused = app.login(&email, PASSWORD).await;
    let seconds: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((PERIOD_SECONDS - 60..=PERIOD_SECONDS).contains(&seconds), "Retry-After {seconds}");
    let problem = assert_problem(refused, 429).await;
    assert_eq!(problem["type"], "/problems/too-many-requests");
    // Another account is not affected.
    let other = registered(&app).await;
    assert_eq!(app.login(&other, PASSWORD).await.status(), 200);
    let metrics = app.get("/metrics").send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"user_logins_total{result="throttled"} 1"#), "{metrics}");
}

#[tokio::test]
async fn an_unknown_email_answers_exactly_like_a_known_one() {
    let app = spawn_app().await;
    let known = registered(&app).await;
    let unknown = fresh_email();
    for attempt in 0..=GUESSES {
        let (known_status, known_headers, known_body) = answer(&app, &known, "wrong-pass").await;
        let (unknown_status, unknown_headers, unknown_body) = answer(&app, &unknown, "wrong-pass").await;
        assert_eq!(known_status, if attempt < GUESSES { 401 } else { 429 }, "attempt {attempt}");
        assert_eq!(known_status, unknown_status, "attempt {attempt}");
        if known_status == 429 {
            // Both periods started within this test: the seconds left (in Retry-After
            // and the detail) may differ by one, nothing else.
            assert!(retry_after(&known_headers).abs_diff(retry_after(&unknown_headers)) <= 1);
            let without_seconds = |body: &Value| {
                let mut body = body.clone();
                body["detail"] = Value::from(body["detail"].as_str().unwrap_or_default().replace(char::is_numeric, ""));
                body
            };
            assert_eq!(without_seconds(&known_body), without_seconds(&unknown_body), "attempt {attempt}");
        } else {
            assert_eq!(known_body, unknown_body, "attempt {attempt}");
            assert_eq!(known_headers, unknown_headers, "attempt {attempt}");
        }
        let names = |h: &BTreeMap<String, String>| h.keys().cloned().collect::<Vec<_>>();
        assert_eq!(names(&known_headers), names(&unknown_headers), "attempt {attempt}");
    }
}

#[tokio::test]
async fn a_successful_login_gives_every_guess_back() {
    let app = spawn_app().await;
    let email = registered(&app).await;
    for _ in 0..GUESSES - 1 {
        assert_problem(app.login(&email, "wrong-pass").await, 401).await;
    }
    assert_eq!(app.login(&email, PASSWORD).await.status(), 200);
    for _ in 0..GUESSES {
        assert_problem(app.login(&email, "wrong-pass").await, 401).await;
    }
    assert_problem(app.login(&email, "wrong-pass").await, 429).await;
}

#[tokio::test]
async fn parallel_guesses_get_no_more_than_five_password_checks() {
    let app = spawn_app().await;
    let email = registered(&app).await;
    let attempts = (0..20).map(|_| app.login(&email, "wrong-pass"));
    let statuses: Vec<u16> = futures::future::join_all(attempts).await.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), GUESSES, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 20 - GUESSES, "{statuses:?}");
}

#[tokio::test]
async fn every_replica_counts_the_same_failures() {
    if skip_when_embedded("about replicas sharing Redis") {
        return;
    }
    let first = spawn_app().await;
    // A second replica on the same database and Redis.
    let mongodb_db = first.config.mongodb.database.clone();
    let second = spawn_app_with(&[("MONGODB_DB", &mongodb_db)]).await;
    let email = registered(&first).await;
    for replica in [&first, &second, &first, &second, &first] {
        assert_problem(replica.login(&email, "wrong-pass").await, 401).await;
    }
    assert_problem(second.login(&email, PASSWORD).await, 429).await;
}

#[tokio::test]
async fn without_redis_logins_work_unthrottled() {
    if skip_when_embedded("about a Redis outage") {
        return;
    }
    let port = closed_port().await;
    let app = spawn_app_with(&[("REDIS_URL", &format!("redis://127.0.0.1:{port}"))]).await;
    let email = registered(&app).await;
    for _ in 0..GUESSES + 2 {
        assert_problem(app.login(&email, "wrong-pass").await, 401).await;
    }
    assert_eq!(app.login(&email, PASSWORD).await.status(), 200);
    let metrics = app.get("/metrics").send().await.unwrap().text().await.unwrap();
    let failures = metrics
        .lines()
        .find_map(|line| line.strip_prefix("user_login_throttle_failures_total "))
        .and_then(|value| value.parse::<f64>().ok());
    assert!(failures.is_some_and(|n| n >= 8.0), "{metrics}");
    let ready = app.get("/readyz").send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["backends"]["redis"]["status"], "degraded");
}
