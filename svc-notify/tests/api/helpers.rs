//! Starts the real application in-process on port 0 with its own MongoDB database,
//! exchange and queue, publishes events the way svc-tasks does, and removes what the
//! test created when the [`TestApp`] is dropped. With `TEST_BACKEND=embedded` the app
//! runs on a redb file in a temporary directory and consumes from the in-process bus,
//! which `publish` then feeds.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{json, Value};
use svc_notify::store::EmbeddedNotificationStore;
use svc_notify::{Application, Config, EventSource};
use todo_common::bus::{BusMessage, EventBus};
use todo_test_support::{eventually, http_client, test_env, token_for, unique_name, Backends};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a test waits for something asynchronous (an event to be consumed, a reconnect).
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A task event in exactly the shape svc-tasks publishes.
#[derive(Debug, Clone)]
pub struct TestEvent {
    pub id: String,
    pub kind: String,
    pub occurred_at: DateTime<Utc>,
    pub user_id: String,
    pub task_id: String,
    pub title: String,
}

impl TestEvent {
    pub fn new(kind: &str, user_id: &str, title: &str) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            kind: kind.to_owned(),
            occurred_at: DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap(),
            user_id: user_id.to_owned(),
            task_id: mongodb::bson::oid::ObjectId::new().to_hex(),
            title: title.to_owned(),
        }
    }

    pub fn at(mut self, occurred_at: DateTime<Utc>) -> Self {
        self.occurred_at = occurred_at;
        self
    }

    pub fn occurred_at_text(&self) -> String {
        self.occurred_at.to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    pub fn body(&self) -> Vec<u8> {
        json!({
            "id": self.id,
            "type": self.kind,
            "occurredAt": self.occurred_at_text(),
            "userId": self.user_id,
            "taskId": self.task_id,
            "requestId": "test-request",
            "data": {"title": self.title, "status": "open", "priority": "normal", "dueDate": null}
        })
        .to_string()
        .into_bytes()
    }

    pub fn properties(&self) -> BasicProperties {
        BasicProperties::default()
            .with_message_id(self.id.as_str().into())
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_correlation_id("test-request".into())
            .with_type(self.kind.as_str().into())
            .with_timestamp(self.occurred_at.timestamp() as u64)
    }
}

pub use todo_test_support::{embedded, skip_when_embedded, DataDir};

/// The names `/readyz` gives the store and the event source.
pub fn backend_names() -> (&'static str, &'static str) {
    if embedded() {
        ("redb", "event-bus")
    } else {
        ("mongodb", "rabbitmq")
    }
}

/// The embedded backends of an app under `TEST_BACKEND=embedded`.
pub struct Embedded {
    pub bus: EventBus,
    _data: DataDir,
}

pub struct TestApp {
    pub embedded: Option<Embedded>,
    pub address: String,
    pub client: reqwest::Client,
    pub exchange: String,
    pub queue: String,
    pub database: String,
    pub backends: Backends,
    shutdown: CancellationToken,
    running: Option<JoinHandle<anyhow::Result<()>>>,
    publisher: Mutex<Option<(Connection, Channel)>>,
}

/// Starts the app against the test backends and waits until it consumes.
pub async fn spawn_app() -> TestApp {
    let app = spawn_app_with(&[]).await;
    app.wait_until_consuming().await;
    app
}

/// Starts the app with `overrides` on top of the test configuration; does not wait for
/// the backends, so an override may point one of them somewhere dead.
pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    todo_common::telemetry::init_for_tests();
    let backends = Backends::from_env();
    let exchange = unique_name("notify_test_exchange");
    let queue = unique_name("notify_test_queue");
    let database = unique_name("notify_test");
    let mut settings = vec![
        ("MONGODB_URI", backends.mongodb_uri.as_str()),
        ("MONGODB_DB", database.as_str()),
        ("AMQP_URL", backends.amqp_url.as_str()),
        ("AMQP_EXCHANGE", exchange.as_str()),
        ("AMQP_QUEUE", queue.as_str()),
    ];
    settings.extend_from_slice(overrides);
    let config = Config::from_env(&test_env(&settings)).expect("test configuration is valid");
    let (application, embedded) = if embedded() {
        let data = DataDir::new();
        let store = EmbeddedNotificationStore::open(&data.0.join("notify.redb")).expect("embedded store opens");
        let (bus, receiver) = todo_common::bus::channel(todo_common::bus::DEFAULT_CAPACITY);
        let application =
            Application::build_with(config, Arc::new(store), EventSource::Bus(receiver)).await.expect("app builds");
        (application, Some(Embedded { bus, _data: data }))
    } else {
        (Application::build(config).await.expect("app builds"), None)
    };
    let address = format!("http://{}", application.local_addr());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(application.run_until_stopped(shutdown.clone()));
    TestApp {
        embedded,
        address,
        client: http_client(),
        exchange,
        queue,
        database,
        backends,
        shutdown,
        running: Some(running),
        publisher: Mutex::new(None),
    }
}

/// A TCP proxy in front of a backend that a test can cut off and restore, to simulate
/// an outage of a backend it must not stop for real.
pub struct OutageProxy {
    pub address: std::net::SocketAddr,
    enabled: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: std::sync::Arc<std::sync::Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl OutageProxy {
    pub async fn start(target: &str) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let address = listener.local_addr().expect("proxy bound");
        let enabled = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(std::sync::Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        let (target, accepting, cuts, stopping) = (target.to_owned(), enabled.clone(), cut.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let mut inbound = tokio::select! {
                    _ = stopping.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((inbound, _)) => inbound,
                        Err(_) => continue,
                    },
                };
                if !accepting.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection closed at once
                }
                let cut = cuts.lock().expect("not poisoned").clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else { return };
                    tokio::select! {
                        _ = cut.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Self { address, enabled, cut, stop }
    }

    /// Refuses new connections and cuts the open ones.
    pub fn cut_off(&self) {
        self.enabled.store(false, std::sync::atomic::Ordering::SeqCst);
        let mut cut = self.cut.lock().expect("not poisoned");
        cut.cancel();
        *cut = CancellationToken::new();
    }

    pub fn restore(&self) {
        self.enabled.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for OutageProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A port nothing listens on.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("bound").port()
}

impl TestApp {
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dlq", self.queue)
    }

    // --- HTTP, one method per endpoint ---

    pub async fn get_notifications(&self, token: Option<&str>, query: &str) -> reqwest::Response {
        let mut request = self.client.get(format!("{}/notifications{query}", self.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("GET /notifications answers")
    }

    pub async fn mark_read(&self, token: Option<&str>, id: &str) -> reqwest::Response {
        let mut request = self.client.post(format!("{}/notifications/{id}/read", self.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("POST /notifications/{id}/read answers")
    }

    pub async fn readyz(&self) -> (u16, Value) {
        let response = self.client.get(format!("{}/readyz", self.address)).send().await.expect("/readyz answers");
        let status = response.status().as_u16();
        (status, response.json().await.expect("/readyz is JSON"))
    }

    pub async fn metrics(&self) -> String {
        let response = self.client.get(format!("{}/metrics", self.address)).send().await.expect("/metrics answers");
        response.text().await.expect("/metrics is text")
    }

    // --- conveniences built on them ---

    /// One page of `user`'s notifications; the call must succeed.
    pub async fn list(&self, user: &str, query: &str) -> Value {
        let response = self.get_notifications(Some(&token_for(user)), query).await;
        assert_eq!(response.status(), 200, "listing {query:?} for {user}");
        response.json().await.expect("a page is JSON")
    }

    /// Waits until `user` has at least `count` notifications and returns them (one page).
    pub async fn wait_for_notifications(&self, user: &str, count: usize) -> Vec<Value> {
        let token = token_for(user);
        eventually(&format!("{count} notifications for {user}"), PATIENCE, || async {
            // Not asserting 200: a test may be waiting for the database to come back.
            let response = self.get_notifications(Some(&token), "?limit=100").await;
            let page: Value = response.json().await.ok()?;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            (items.len() >= count).then_some(items)
        })
        .await
    }

    /// The value of one sample, e.g. `events_duplicate_total` or `x_total{reason="a"}`.
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        let text = self.metrics().await;
        text.lines()
            .find_map(|line| line.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|value| value.trim().parse().ok())
    }

    pub async fn wait_for_metric(&self, sample: &str, value: f64) {
        eventually(&format!("{sample} = {value}"), PATIENCE, || async {
            (self.metric(sample).await == Some(value)).then_some(())
        })
        .await
    }

    pub async fn wait_until_consuming(&self) {
        eventually("the consumer to be up", PATIENCE, || async {
            let (_, body) = self.readyz().await;
            (body["backends"][backend_names().1]["status"] == "up").then_some(())
        })
        .await
    }

    /// Waits until the app stops by itself (no shutdown asked) and returns how it ended.
    pub async fn stopped_by_itself(&mut self) -> anyhow::Result<()> {
        let running = self.running.take().expect("the app runs");
        tokio::time::timeout(PATIENCE, running).await.expect("the app stops by itself in time").expect("the app ran")
    }

    /// Stops the app the way SIGTERM does and waits until it has.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            let stopped = tokio::time::timeout(PATIENCE, running).await.expect("the app stops in time");
            stopped.expect("the app ran").expect("the app stopped cleanly");
        }
    }

    // --- AMQP ---

    /// A confirming channel to the broker, reopened if the broker went away.
    async fn publisher(&self) -> Channel {
        let mut publisher = self.publisher.lock().await;
        if let Some((_, channel)) = publisher.as_ref() {
            if channel.status().connected() {
                return channel.clone();
            }
        }
        let connection = Connection::connect(&self.backends.amqp_url, ConnectionProperties::default())
            .await
            .expect("test broker reachable");
        let channel = connection.create_channel().await.expect("channel opens");
        channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms on");
        *publisher = Some((connection, channel.clone()));
        channel
    }

    pub async fn publish(&self, event: &TestEvent) {
        self.publish_raw(&event.kind, &event.body(), event.properties()).await;
    }

    /// Publishes anything to the app's exchange and waits for the broker's confirm.
    /// On the embedded backends: hands it to the bus and waits until the app settled it.
    pub async fn publish_raw(&self, routing_key: &str, body: &[u8], properties: BasicProperties) {
        if let Some(embedded) = &self.embedded {
            let message = BusMessage {
                event_id: properties
                    .message_id()
                    .as_ref()
                    .map_or_else(|| uuid::Uuid::new_v4().to_string(), |id| id.as_str().to_owned()),
                routing_key: routing_key.to_owned(),
                correlation_id: properties.correlation_id().as_ref().map(|id| id.as_str().to_owned()),
                traceparent: None,
                payload: String::from_utf8_lossy(body).into_owned(),
            };
            embedded.bus.publish(message).await.expect("the app settles the message");
            return;
        }
        let channel = self.publisher().await;
        let confirm = channel
            .basic_publish(&self.exchange, routing_key, BasicPublishOptions::default(), body, properties)
            .await
            .expect("publish sent");
        let confirmation = tokio::time::timeout(Duration::from_secs(5), confirm)
            .await
            .expect("confirm in time")
            .expect("confirm received");
        assert!(confirmation.is_ack(), "the broker confirms the publish");
    }

    /// Takes one message off `queue`, if there is one.
    pub async fn take_message(&self, queue: &str) -> Option<Vec<u8>> {
        let channel = self.publisher().await;
        let message = channel.basic_get(queue, BasicGetOptions { no_ack: true }).await.expect("basic.get works");
        message.map(|m| m.delivery.data)
    }

    /// How many messages wait in `queue` (declared passively, so it must exist).
    pub async fn queue_depth(&self, queue: &str) -> u32 {
        let channel = self.publisher().await;
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        channel.queue_declare(queue, passive, FieldTable::default()).await.expect("queue exists").message_count()
    }
}

impl Drop for TestApp {
    /// Removes the test's broker objects and database. The app's tasks live on this
    /// test's (current-thread) runtime, which is blocked here and dropped right after,
    /// so nothing redeclares what is being deleted.
    fn drop(&mut self) {
        self.shutdown.cancel();
        if self.embedded.is_some() {
            return;
        }
        let amqp_url = self.backends.amqp_url.clone();
        let mongodb_uri = self.backends.mongodb_uri.clone();
        let (exchange, queue, database) = (self.exchange.clone(), self.queue.clone(), self.database.clone());
        todo_test_support::clean_up_blocking(async move {
            if let Ok(connection) = Connection::connect(&amqp_url, ConnectionProperties::default()).await {
                if let Ok(channel) = connection.create_channel().await {
                    todo_test_support::delete_notify_topology(&channel, &exchange, &queue).await;
                }
                let _ = connection.close(200, "test done").await;
            }
            if let Ok(client) = mongodb::Client::with_uri_str(&mongodb_uri).await {
                let _ = client.database(&database).drop().await;
            }
        });
    }
}
