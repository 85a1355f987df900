//! Starts the real svc-tasks in-process on a free port, with its own MongoDB database,
//! Redis key prefix and RabbitMQ exchange, and drives it over HTTP. With
//! `TEST_BACKEND=embedded` it runs on a redb file in a temporary directory, the in-process
//! cache and an in-process bus whose messages the test reads as it would a queue.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, ExchangeKind};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;
use svc_tasks::outbox::Relay;
use svc_tasks::{Application, Backends as AppBackends, Config};
use todo_common::bus::{BusMessage, Settlement};
use todo_common::config::EnvSource;
use todo_test_support::{amqp_channel, eventually, http_client, test_env, token_for, unique_name, Backends};
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::{CancellationToken, DropGuard};

pub const PATIENCE: Duration = Duration::from_secs(15);

pub use todo_test_support::net::{closed_port, CuttableProxy};
pub use todo_test_support::{embedded, skip_when_embedded, DataDir};

/// The names `/readyz` gives the store, the cache and the publisher.
pub fn backend_names() -> [&'static str; 3] {
    if embedded() {
        ["redb", "memory-cache", "event-bus"]
    } else {
        ["mongodb", "redis", "rabbitmq"]
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub config: Config,
    pub relay: Arc<Relay>,
    /// Under `TEST_BACKEND=embedded`: every message the bus delivered, until a test takes it.
    bus_messages: Mutex<Option<mpsc::Receiver<BusMessage>>>,
    _data: Option<DataDir>,
    pub stopped: tokio::task::JoinHandle<()>,
    pub stop: CancellationToken,
    client: reqwest::Client,
    _stop_on_drop: DropGuard,
}

/// A user of the app under test: their id and a valid token.
#[derive(Clone)]
pub struct User {
    pub id: String,
    pub token: String,
}

impl User {
    pub fn new() -> Self {
        let id = unique_name("user");
        Self { token: token_for(&id), id }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Overrides go over the defaults (the local backends, unique names).
pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    todo_common::telemetry::init_for_tests();
    let backends = Backends::from_env();
    let db_name = unique_name("tasks");
    let prefix = format!("{}:", unique_name("test_tasks"));
    let exchange = unique_name("task.events");
    let mut env = test_env(&[
        ("MONGODB_URI", &backends.mongodb_uri),
        ("MONGODB_DB", &db_name),
        ("REDIS_URL", &backends.redis_url),
        ("REDIS_KEY_PREFIX", &prefix),
        ("AMQP_URL", &backends.amqp_url),
        ("AMQP_EXCHANGE", &exchange),
    ]);
    for (k, v) in overrides {
        env.insert(k.to_string(), v.to_string());
    }
    let config = Config::from_env(&env as &dyn EnvSource).expect("test config is valid");
    let (app, bus_messages, data) = if embedded() {
        let data = DataDir::new();
        let (bus, mut receiver) = todo_common::bus::channel(todo_common::bus::DEFAULT_CAPACITY);
        let (forward, messages) = mpsc::channel(4096);
        // Stands in for svc-notify: accepts every message once it has recorded it.
        tokio::spawn(async move {
            while let Some(delivery) = receiver.recv().await {
                let _ = forward.try_send(delivery.message.clone());
                delivery.settle(Settlement::Accepted);
            }
        });
        let backends = AppBackends::embedded(&data.0, bus).expect("embedded backends open");
        let app = Application::build_with(config.clone(), backends).await.expect("app builds");
        (app, Some(messages), Some(data))
    } else {
        (Application::build(config.clone()).await.expect("app builds"), None, None)
    };
    let addr = app.local_addr();
    let relay = app.relay();
    let stop = CancellationToken::new();
    let stopped = tokio::spawn(app.run_until_stopped(stop.clone()));
    TestApp {
        addr,
        config,
        relay,
        bus_messages: Mutex::new(bus_messages),
        _data: data,
        stopped,
        stop: stop.clone(),
        client: http_client(),
        _stop_on_drop: stop.drop_guard(),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn request(&self, method: Method, path: &str, user: &User) -> RequestBuilder {
        self.client.request(method, self.url(path)).bearer_auth(&user.token)
    }

    pub fn anonymous(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    pub async fn create(&self, user: &User, body: Value) -> Response {
        self.request(Method::POST, "/tasks", user).json(&body).send().await.expect("request sent")
    }

    /// Creates a task and returns it.
    pub async fn created(&self, user: &User, title: &str) -> Value {
        let response = self.create(user, serde_json::json!({ "title": title })).await;
        assert_eq!(response.status(), 201, "create failed");
        response.json().await.expect("task JSON")
    }

    pub async fn list(&self, user: &User, query: &str) -> Response {
        self.request(Method::GET, &format!("/tasks{query}"), user).send().await.expect("request sent")
    }

    /// The items of one list page, asserting 200.
    pub async fn list_page(&self, user: &User, query: &str) -> Value {
        let response = self.list(user, query).await;
        assert_eq!(response.status(), 200, "list failed");
        response.json().await.expect("page JSON")
    }

    pub async fn get_task(&self, user: &User, id: &str) -> Response {
        self.request(Method::GET, &format!("/tasks/{id}"), user).send().await.expect("request sent")
    }

    pub async fn patch(&self, user: &User, id: &str, body: Value) -> Response {
        self.request(Method::PATCH, &format!("/tasks/{id}"), user).json(&body).send().await.expect("request sent")
    }

    pub async fn complete(&self, user: &User, id: &str) -> Response {
        self.request(Method::POST, &format!("/tasks/{id}/complete"), user).send().await.expect("request sent")
    }

    pub async fn reopen(&self, user: &User, id: &str) -> Response {
        self.request(Method::POST, &format!("/tasks/{id}/reopen"), user).send().await.expect("request sent")
    }

    pub async fn delete(&self, user: &User, id: &str) -> Response {
        self.request(Method::DELETE, &format!("/tasks/{id}"), user).send().await.expect("request sent")
    }

    pub async fn readyz(&self) -> (u16, Value) {
        let response = self.anonymous(Method::GET, "/readyz").send().await.expect("request sent");
        let status = response.status().as_u16();
        (status, response.json().await.expect("readiness JSON"))
    }

    /// The value of one sample in `/metrics`, e.g. `cache_requests_total{result="hit"}`; 0 when absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = self.anonymous(Method::GET, "/metrics").send().await.expect("sent").text().await.expect("text");
        text.lines()
            .filter_map(|line| line.strip_prefix(sample))
            .filter_map(|rest| rest.strip_prefix(' '))
            .find_map(|value| value.trim().parse().ok())
            .unwrap_or(0.0)
    }

    pub async fn outbox_len(&self) -> u64 {
        self.relay.backlog_len().await.expect("outbox count")
    }

    /// Binds a fresh queue to the app's exchange, receiving every task event from now on;
    /// on the embedded backends, the bus's messages (once per app).
    pub async fn event_queue(&self) -> EventQueue {
        if let Some(messages) = self.bus_messages.lock().await.take() {
            return EventQueue { name: "in-process bus".into(), source: Source::Bus(messages) };
        }
        EventQueue::bind(&Backends::from_env().amqp_url, &self.config.amqp_exchange, true).await
    }
}

/// Ids of the items of a page, in order.
pub fn ids(page: &Value) -> Vec<String> {
    page["items"].as_array().expect("items").iter().map(|t| t["id"].as_str().expect("id").to_owned()).collect()
}

pub use todo_test_support::assert_problem;

/// The fields named by a validation problem.
pub fn error_fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| errors.iter().filter_map(|e| e["field"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// One event as received from the broker (or the in-process bus).
#[derive(Debug, Clone)]
pub struct ReceivedEvent {
    pub routing_key: String,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    /// The AMQP properties; the bus has none beyond the two above.
    pub properties: Option<BasicProperties>,
    pub body: Value,
}

impl ReceivedEvent {
    pub fn kind(&self) -> &str {
        self.body["type"].as_str().unwrap_or_default()
    }
    pub fn task_id(&self) -> &str {
        self.body["taskId"].as_str().unwrap_or_default()
    }
}

/// A queue bound to an exchange with `task.*`, consumed without acks.
pub struct EventQueue {
    pub name: String,
    source: Source,
}

enum Source {
    Amqp { channel: lapin::Channel, consumer: Box<lapin::Consumer> },
    Bus(mpsc::Receiver<BusMessage>),
}

impl EventQueue {
    /// `exclusive` queues vanish with the connection; a broker restart needs a durable one.
    pub async fn bind(amqp_url: &str, exchange: &str, exclusive: bool) -> Self {
        let name = unique_name("tasks-test-queue");
        let channel = amqp_channel(amqp_url).await;
        channel
            .exchange_declare(
                exchange,
                ExchangeKind::Topic,
                ExchangeDeclareOptions { durable: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .expect("exchange declared");
        let options = QueueDeclareOptions { durable: !exclusive, exclusive, ..Default::default() };
        channel.queue_declare(&name, options, FieldTable::default()).await.expect("queue declared");
        channel
            .queue_bind(&name, exchange, "task.*", QueueBindOptions::default(), FieldTable::default())
            .await
            .expect("queue bound");
        let consumer = channel
            .basic_consume(
                &name,
                "tests",
                BasicConsumeOptions { no_ack: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .expect("consuming");
        Self { name, source: Source::Amqp { channel, consumer: Box::new(consumer) } }
    }

    /// Re-attaches to an existing durable queue (after a broker restart).
    #[allow(dead_code)] // used by tests/broker_outage.rs only
    pub async fn reattach(amqp_url: &str, name: &str) -> Self {
        let channel = amqp_channel(amqp_url).await;
        let consumer = channel
            .basic_consume(
                name,
                "tests",
                BasicConsumeOptions { no_ack: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .expect("consuming");
        Self { name: name.to_owned(), source: Source::Amqp { channel, consumer: Box::new(consumer) } }
    }

    /// The next event, or `None` after `patience`.
    pub async fn next(&mut self, patience: Duration) -> Option<ReceivedEvent> {
        match &mut self.source {
            Source::Amqp { consumer, .. } => {
                let delivery = tokio::time::timeout(patience, consumer.next()).await.ok()??.ok()?;
                let properties = delivery.properties.clone();
                Some(ReceivedEvent {
                    routing_key: delivery.routing_key.to_string(),
                    message_id: properties.message_id().as_ref().map(|s| s.as_str().to_owned()),
                    correlation_id: properties.correlation_id().as_ref().map(|s| s.as_str().to_owned()),
                    properties: Some(properties),
                    body: serde_json::from_slice(&delivery.data).expect("event body is JSON"),
                })
            }
            Source::Bus(messages) => {
                let message = tokio::time::timeout(patience, messages.recv()).await.ok()??;
                Some(ReceivedEvent {
                    routing_key: message.routing_key,
                    message_id: Some(message.event_id),
                    correlation_id: message.correlation_id,
                    properties: None,
                    body: serde_json::from_str(&message.payload).expect("event body is JSON"),
                })
            }
        }
    }

    /// Every event up to and including the first that `last` accepts.
    pub async fn until(&mut self, last: impl Fn(&ReceivedEvent) -> bool) -> Vec<ReceivedEvent> {
        let mut seen = Vec::new();
        loop {
            let event = self.next(PATIENCE).await.unwrap_or_else(|| panic!("no further event; so far {seen:#?}"));
            let done = last(&event);
            seen.push(event);
            if done {
                return seen;
            }
        }
    }

    pub async fn delete(self) {
        if let Source::Amqp { channel, .. } = &self.source {
            let _ = channel.queue_delete(&self.name, Default::default()).await;
        }
    }
}

/// Polls until the app's outbox is empty.
pub async fn outbox_drained(app: &TestApp) {
    eventually("the outbox to drain", PATIENCE, || async { (app.outbox_len().await == 0).then_some(()) }).await;
}
