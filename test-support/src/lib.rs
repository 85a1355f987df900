//! Helpers for the black-box tests: where the real backends are, unique names so
//! tests run in parallel, polling with a deadline, and token minting.

pub mod net;
pub mod otlp;

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use todo_common::auth::{JwtSettings, TokenIssuer};

/// The key every test process signs and verifies with.
pub const TEST_JWT_SECRET: &str = "test-secret-0123456789-abcdefghijklmnop";

/// Where the test backends listen; overridable for other machines.
pub struct Backends {
    pub mongodb_uri: String,
    pub redis_url: String,
    pub amqp_url: String,
}

impl Backends {
    pub fn from_env() -> Self {
        let get = |key: &str, default: &str| std::env::var(key).unwrap_or_else(|_| default.to_owned());
        Self {
            mongodb_uri: get("TEST_MONGODB_URI", "mongodb://127.0.0.1:27017"),
            redis_url: get("TEST_REDIS_URL", "redis://127.0.0.1:6379"),
            amqp_url: get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
        }
    }
}

/// A name no other test (or earlier run) uses: `prefix_<uuid>`.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// A configuration map for an app under test: port 0, the test key, plus `extra`.
pub fn test_env(extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = [
        ("LISTEN_ADDR", "127.0.0.1:0"),
        ("JWT_SECRET", TEST_JWT_SECRET),
        ("SHUTDOWN_GRACE_SECONDS", "2"),
        ("BCRYPT_COST", "4"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    env
}

pub fn jwt_settings() -> JwtSettings {
    JwtSettings::with_secret(TEST_JWT_SECRET)
}

/// A valid access token for `subject`, signed with the test key.
pub fn token_for(subject: &str) -> String {
    TokenIssuer::new(&jwt_settings(), Duration::from_secs(3600))
        .and_then(|issuer| issuer.issue(subject))
        .expect("token signs")
}

/// Polls `check` until it returns `Some`, or panics with `what` after `patience`.
pub async fn eventually<T, F, Fut>(what: &str, patience: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + patience;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {patience:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A plain HTTP client with a timeout, so no test hangs on a broken server.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client builds")
}

/// Opens an AMQP channel to the test broker.
pub async fn amqp_channel(url: &str) -> lapin::Channel {
    let connection =
        lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await.expect("test broker reachable");
    connection.create_channel().await.expect("channel opens")
}

/// Deletes what svc-notify declares for `queue` on `exchange`: the queue, its dead-letter
/// queue and exchange, and the exchange. Tests must leave no quorum queue behind: each
/// is a Raft group, and a few hundred of them slow a broker restart to a halt.
pub async fn delete_notify_topology(channel: &lapin::Channel, exchange: &str, queue: &str) {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    for name in [queue.to_owned(), format!("{queue}.dlq")] {
        let _ = channel.queue_delete(&name, QueueDeleteOptions::default()).await;
    }
    for name in [exchange.to_owned(), format!("{queue}.dlx")] {
        let _ = channel.exchange_delete(&name, ExchangeDeleteOptions::default()).await;
    }
}

/// Runs `cleanup` to completion from a `Drop`, on a thread and runtime of its own (the
/// test's runtime may be the one being dropped), within 10 s.
pub fn clean_up_blocking<F>(cleanup: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let worker = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        runtime.block_on(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), cleanup).await;
        });
    });
    let _ = worker.join();
}

/// True when the services' contract suites run on the embedded backends
/// (`TEST_BACKEND=embedded`) instead of MongoDB, Redis and RabbitMQ.
pub fn embedded() -> bool {
    std::env::var("TEST_BACKEND").is_ok_and(|backend| backend == "embedded")
}

/// Says why a test does not apply to the embedded backends; true when it should stop.
pub fn skip_when_embedded(why: &str) -> bool {
    if embedded() {
        eprintln!("skipped under TEST_BACKEND=embedded: {why}");
    }
    embedded()
}

/// A temporary data directory for an embedded store, removed when dropped.
pub struct DataDir(pub std::path::PathBuf);

impl DataDir {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(unique_name("todo-test-data"));
        std::fs::create_dir_all(&path).expect("temp data dir");
        Self(path)
    }
}

impl Default for DataDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Asserts a problem+json answer with `status` and returns its body.
pub async fn assert_problem(response: reqwest::Response, status: u16) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status, "unexpected status");
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: serde_json::Value = response.json().await.expect("problem body is JSON");
    assert_eq!(body["status"], status);
    assert!(body["title"].is_string() && body["detail"].is_string() && body["type"].is_string(), "{body}");
    body
}
