//! Through the real edge, in front of the real services, on the real backends.

use std::time::Duration;

use reqwest::{Method, Response};
use serde_json::{json, Value};
use todo_e2e::System;
use todo_test_support::{eventually, http_client, unique_name};

mod tokens;
mod traces;

/// The helmet default set the contract requires on every response.
const SECURITY_HEADERS: &[&str] = &[
    "content-security-policy",
    "strict-transport-security",
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
    "cross-origin-opener-policy",
    "cross-origin-resource-policy",
    "x-dns-prefetch-control",
    "x-permitted-cross-domain-policies",
    "origin-agent-cluster",
    "x-download-options",
    "x-xss-protection",
];

struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl Client {
    fn new(base: &str) -> Self {
        Self { base: base.to_owned(), http: http_client(), token: None }
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Response {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("request sent")
    }

    /// Registers and logs in a fresh user; returns a client carrying its token.
    async fn signed_up(base: &str) -> Self {
        let mut client = Self::new(base);
        let email = format!("{}@example.com", unique_name("e2e"));
        let credentials = json!({ "email": email, "password": "e2e-password" });
        let registered = client.send(Method::POST, "/users/register", Some(credentials.clone())).await;
        assert_eq!(registered.status(), 201);
        let login: Value = client.send(Method::POST, "/users/login", Some(credentials)).await.json().await.unwrap();
        client.token = Some(login["accessToken"].as_str().expect("access token").to_owned());
        client
    }
}

fn assert_security_headers(response: &Response) {
    for name in SECURITY_HEADERS {
        assert!(response.headers().contains_key(*name), "{name} missing on {} {}", response.status(), response.url());
    }
    assert_eq!(response.headers()["x-xss-protection"], "0");
    assert!(!response.headers().contains_key("server"), "a header names the server software");
    assert!(!response.headers().contains_key("x-powered-by"));
}

async fn assert_problem(response: Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status);
    assert_security_headers(&response);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let body: Value = response.json().await.expect("problem+json body");
    assert_eq!(body["status"], status);
    body
}

#[tokio::test]
async fn the_readme_walk_through_works_through_the_edge() {
    let system = System::start().await;
    let user = Client::signed_up(&system.edge_url).await;

    let me = user.send(Method::GET, "/users/me", None).await;
    assert_eq!(me.status(), 200);
    assert_security_headers(&me);

    let created = user.send(Method::POST, "/tasks", Some(json!({ "title": "Buy milk", "priority": "high" }))).await;
    assert_eq!(created.status(), 201);
    assert_security_headers(&created);
    let task: Value = created.json().await.unwrap();
    let id = task["id"].as_str().unwrap();

    let completed = user.send(Method::POST, &format!("/tasks/{id}/complete"), None).await;
    assert_eq!(completed.status(), 200);
    assert_eq!(completed.json::<Value>().await.unwrap()["status"], "completed");

    let list: Value = user.send(Method::GET, "/tasks", None).await.json().await.unwrap();
    assert_eq!(list["items"][0]["id"], id);

    let notification = eventually("the completion notification", Duration::from_secs(15), || async {
        let list: Value = user.send(Method::GET, "/notifications", None).await.json().await.ok()?;
        list["items"].as_array()?.iter().find(|n| n["type"] == "task.completed").cloned()
    })
    .await;
    assert_eq!(notification["message"], "Task \"Buy milk\" was completed");
    assert_eq!(notification["taskId"], id);
    assert_eq!(notification["read"], false);

    let read =
        user.send(Method::POST, &format!("/notifications/{}/read", notification["id"].as_str().unwrap()), None).await;
    assert_eq!(read.status(), 200);
    assert_eq!(read.json::<Value>().await.unwrap()["read"], true);
}

#[tokio::test]
async fn one_user_never_reaches_anothers_tasks_or_notifications() {
    let system = System::start().await;
    let alice = Client::signed_up(&system.edge_url).await;
    let bob = Client::signed_up(&system.edge_url).await;
    let task: Value =
        alice.send(Method::POST, "/tasks", Some(json!({ "title": "Alice's" }))).await.json().await.unwrap();
    let id = task["id"].as_str().unwrap();
    alice.send(Method::POST, &format!("/tasks/{id}/complete"), None).await;

    for (method, path, body) in [
        (Method::GET, format!("/tasks/{id}"), None),
        (Method::PATCH, format!("/tasks/{id}"), Some(json!({ "title": "mine now" }))),
        (Method::POST, format!("/tasks/{id}/complete"), None),
        (Method::POST, format!("/tasks/{id}/reopen"), None),
        (Method::DELETE, format!("/tasks/{id}"), None),
    ] {
        assert_problem(bob.send(method, &path, body).await, 404).await;
    }
    let bobs_list: Value = bob.send(Method::GET, "/tasks", None).await.json().await.unwrap();
    assert_eq!(bobs_list["items"], json!([]));

    let alices = eventually("alice's notification", Duration::from_secs(15), || async {
        let list: Value = alice.send(Method::GET, "/notifications", None).await.json().await.ok()?;
        list["items"].as_array()?.first().cloned()
    })
    .await;
    let bobs: Value = bob.send(Method::GET, "/notifications", None).await.json().await.unwrap();
    assert_eq!(bobs["items"], json!([]));
    let path = format!("/notifications/{}/read", alices["id"].as_str().unwrap());
    assert_problem(bob.send(Method::POST, &path, None).await, 404).await;

    // Straight at the service, an identity header instead of a token gets nowhere.
    let direct = http_client()
        .get(format!("{}/tasks/{id}", system.tasks_url))
        .header("x-user-id", "anyone")
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 401);
}

#[tokio::test]
async fn bad_tokens_are_refused_at_the_edge_with_every_header() {
    let system = System::start().await;
    let mut client = Client::new(&system.edge_url);
    let missing = client.send(Method::GET, "/tasks", None).await;
    assert_eq!(missing.headers()["www-authenticate"], "Bearer error=\"invalid_token\"");
    assert_problem(missing, 401).await;
    client.token = Some("not.a.token".into());
    assert_problem(client.send(Method::GET, "/tasks", None).await, 401).await;
    client.token = Some(system.token_for("someone").replace('.', ".x"));
    assert_problem(client.send(Method::GET, "/notifications", None).await, 401).await;
}

#[tokio::test]
async fn errors_written_by_the_edge_are_problems_with_the_same_headers() {
    let mut system = System::start().await;
    let user = Client::signed_up(&system.edge_url).await;
    assert_problem(user.send(Method::GET, "/no/such/route", None).await, 404).await;

    let huge = json!({ "title": "x".repeat(2 * 1024 * 1024) });
    assert_problem(user.send(Method::POST, "/tasks", Some(huge)).await, 413).await;

    system.kill("svc-tasks");
    let down = user.send(Method::GET, "/tasks", None).await;
    let status = down.status().as_u16();
    assert!([502, 503, 504].contains(&status), "got {status}");
    assert_problem(down, status).await;
}

#[tokio::test]
async fn request_ids_pass_through_the_edge() {
    let system = System::start().await;
    let response = http_client()
        .get(format!("{}/users/me", system.edge_url))
        .header("x-request-id", "e2e-request-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "e2e-request-1");
    let made = http_client().get(format!("{}/healthz", system.edge_url)).send().await.unwrap();
    assert!(made.headers().get("x-request-id").is_some_and(|v| !v.is_empty()));
}

#[tokio::test]
async fn browsers_from_allowlisted_origins_get_cors_answers_even_on_errors() {
    let system = System::start().await;
    let http = http_client();
    let preflight = http
        .request(Method::OPTIONS, format!("{}/tasks", system.edge_url))
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204, "preflight is answered before any token check");
    assert_eq!(preflight.headers()["access-control-allow-origin"], "http://localhost:3000");
    assert!(preflight.headers()["vary"].to_str().unwrap().to_lowercase().contains("origin"));
    assert_security_headers(&preflight);

    let unauthorized =
        http.get(format!("{}/tasks", system.edge_url)).header("origin", "http://localhost:3000").send().await.unwrap();
    assert_eq!(unauthorized.headers()["access-control-allow-origin"], "http://localhost:3000");
    assert_problem(unauthorized, 401).await;

    let foreign =
        http.get(format!("{}/tasks", system.edge_url)).header("origin", "https://evil.example").send().await.unwrap();
    assert!(!foreign.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn each_binary_probes_its_own_health_for_container_health_checks() {
    let mut system = System::start().await;
    for name in system.process_names() {
        assert!(system.probe(&name), "{name} --probe reports healthy while it runs");
    }
    system.kill("svc-notify");
    assert!(!system.probe("svc-notify"), "svc-notify --probe reports unhealthy once it is gone");
}

#[tokio::test]
async fn every_process_exports_its_process_metrics() {
    let system = System::start().await;
    let client = http_client();
    for name in system.process_names() {
        let metrics = client.get(format!("{}/metrics", system.ops_url(&name))).send().await.expect("metrics");
        let text = metrics.text().await.expect("metrics text");
        for series in ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"] {
            assert!(text.contains(&format!("\n{series} ")), "{name}: {series} missing");
        }
    }
}
