//! What every hostile test needs: signed-up users, raw TCP exchanges for what an HTTP
//! client refuses to send, and the request counters that show whether a service was reached.

use std::time::{Duration, Instant};

use reqwest::{Method, Response};
use serde_json::{json, Value};
use todo_e2e::System;
use todo_test_support::{http_client, unique_name};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Routes every process answers itself; they never show that a request got through.
const OPERATIONS_ROUTES: &[&str] = &["/healthz", "/readyz", "/metrics"];

#[derive(Clone)]
pub struct User {
    pub base: String,
    pub http: reqwest::Client,
    pub id: String,
    pub email: String,
    pub token: String,
}

impl User {
    /// Registers and logs in a fresh user through `base`.
    pub async fn sign_up(base: &str) -> Self {
        let http = http_client();
        let email = format!("{}@example.com", unique_name("hostile"));
        let credentials = json!({ "email": email, "password": "hostile-password" });
        let registered = http.post(format!("{base}/users/register")).json(&credentials).send().await.unwrap();
        assert_eq!(registered.status(), 201);
        let id = registered.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        let login: Value =
            http.post(format!("{base}/users/login")).json(&credentials).send().await.unwrap().json().await.unwrap();
        let token = login["accessToken"].as_str().expect("access token").to_owned();
        Self { base: base.to_owned(), http, id, email, token }
    }

    /// The same user, talking to another address (a service directly).
    pub fn at(&self, base: &str) -> Self {
        Self { base: base.to_owned(), ..self.clone() }
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token)
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Response {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        send_patiently(request).await
    }

    pub async fn create_task(&self, title: &str) -> Value {
        let created = self.send(Method::POST, "/tasks", Some(json!({ "title": title }))).await;
        assert_eq!(created.status(), 201);
        created.json().await.unwrap()
    }

    /// Every task of this user (one page of 100 is plenty for a test).
    pub async fn tasks(&self) -> Vec<Value> {
        let list = self.send(Method::GET, "/tasks?limit=100", None).await;
        assert_eq!(list.status(), 200);
        list.json::<Value>().await.unwrap()["items"].as_array().unwrap().clone()
    }

    pub async fn notifications(&self) -> Vec<Value> {
        let list = self.send(Method::GET, "/notifications?limit=100", None).await;
        assert_eq!(list.status(), 200);
        list.json::<Value>().await.unwrap()["items"].as_array().unwrap().clone()
    }
}

/// `host:port` of a base URL, for raw connections.
pub fn authority(base: &str) -> &str {
    base.trim_start_matches("http://")
}

/// What a raw exchange produced: the bytes answered and when the server answered or
/// closed (`None`: still open when we gave up).
pub struct RawOutcome {
    pub response: Vec<u8>,
    pub ended_after: Option<Duration>,
}

impl RawOutcome {
    /// The status code of the first response, if one came.
    pub fn status(&self) -> Option<u16> {
        let head = std::str::from_utf8(self.response.get(..12)?).ok()?;
        head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
    }

    pub fn head(&self) -> String {
        let text = String::from_utf8_lossy(&self.response);
        text.split("\r\n\r\n").next().unwrap_or_default().to_owned()
    }
}

/// Sends `bytes`, then reads until the server closes or `patience` runs out.
pub async fn raw_exchange(base: &str, bytes: &[u8], patience: Duration) -> RawOutcome {
    let mut stream = TcpStream::connect(authority(base)).await.expect("connects");
    let started = Instant::now();
    // A server may answer and close before taking everything (a refused header); fine.
    let _ = stream.write_all(bytes).await;
    read_until_closed(&mut stream, started, patience).await
}

/// Reads the answer of an already written request until EOF or `patience` has passed.
pub async fn read_until_closed(stream: &mut TcpStream, started: Instant, patience: Duration) -> RawOutcome {
    let mut response = Vec::new();
    let mut buffer = [0_u8; 16 * 1024];
    loop {
        let left = patience.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Err(_) => return RawOutcome { response, ended_after: None },
            Ok(Ok(0)) | Ok(Err(_)) => return RawOutcome { response, ended_after: Some(started.elapsed()) },
            Ok(Ok(n)) => response.extend_from_slice(&buffer[..n]),
        }
    }
}

/// A GET with the given extra header lines (each without its CRLF), `Connection: close`.
pub fn raw_get(path: &str, header_lines: &[&[u8]]) -> Vec<u8> {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n").into_bytes();
    for line in header_lines {
        request.extend_from_slice(line);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"Connection: close\r\n\r\n");
    request
}

/// The Prometheus text of one process.
pub async fn metrics_text(base: &str) -> String {
    let response = http_client().get(format!("{base}/metrics")).send().await.expect("metrics answer");
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// Sums the samples of `name` whose label set satisfies `keep` (given the raw `{...}` text).
pub fn sum_samples(text: &str, name: &str, keep: impl Fn(&str) -> bool) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let labels = series.strip_prefix(name)?;
            let labels = if labels.is_empty() { "" } else { labels.strip_prefix('{')?.strip_suffix('}')? };
            keep(labels).then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Requests the three services answered, besides their own health and metrics routes.
pub async fn service_requests(system: &System) -> f64 {
    let mut total = 0.0;
    for base in [&system.users_url, &system.tasks_url, &system.notify_url] {
        let text = metrics_text(base).await;
        total += sum_samples(&text, "http_requests_total", |labels| {
            !OPERATIONS_ROUTES.iter().any(|route| labels.contains(&format!("route=\"{route}\"")))
        });
    }
    total
}

/// Requests the edge refused with 401, over every reason.
pub async fn edge_unauthorized(system: &System) -> f64 {
    sum_samples(&metrics_text(&system.ops_url("edge")).await, "edge_unauthorized_total", |_| true)
}

/// Asserts a problem+json answer with a status in `range`, and returns its body.
pub async fn assert_client_error(response: Response, what: &str) -> Value {
    let status = response.status().as_u16();
    assert!((400..500).contains(&status), "{what}: expected a 4xx, got {status}");
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap_or_default().to_owned());
    assert_eq!(content_type.as_deref(), Some("application/problem+json"), "{what}: {status} is not a problem");
    let body: Value = response.json().await.unwrap_or_else(|e| panic!("{what}: problem body is not JSON: {e}"));
    assert_eq!(body["status"], status, "{what}");
    body
}

/// 503s met by [`send_patiently`]: answers given while a backend was momentarily
/// unreachable (the shared test MongoDB under load), not verdicts on the request.
pub static UNAVAILABLE_RETRIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Sends `request`, sending it again (up to 3 times, 0.5 s apart) while it is answered
/// 503: a backend outage the service reports honestly. A 503 that persists is returned,
/// as is every other answer.
pub async fn send_patiently(request: reqwest::RequestBuilder) -> Response {
    let mut attempt = 0;
    loop {
        let response = request.try_clone().expect("a cloneable request").send().await.expect("request sent");
        attempt += 1;
        if response.status() != 503 || attempt > 3 {
            return response;
        }
        UNAVAILABLE_RETRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
