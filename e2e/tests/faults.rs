//! Fault scenarios: the real system under load while a backend or a process fails,
//! checking that nothing accepted is lost or doubled and that failures are quick, clear
//! answers. Each scenario prints what it injected and what it counted, restores what it
//! broke even when it fails (drop guards), and runs alone (`SERIAL`), so the figures are
//! not disturbed by another scenario's load.
//!
//! `cargo test -p todo-e2e --test faults -- --nocapture` (the RabbitMQ scenario stops the
//! shared broker: take `flock /tmp/broker-fault.lock` around it on a shared machine).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use todo_e2e::{Options, System};
use todo_test_support::{eventually, http_client, unique_name, Backends};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// One scenario at a time: they share the broker and the machine's two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Hard bounds on every load loop, whatever the scenario waits for.
const LOAD_MAX_ITERATIONS_PER_WORKER: usize = 1000;
/// A client's pause after a failed iteration, so an outage is not met with a retry storm.
const FAILED_ITERATION_PAUSE: Duration = Duration::from_millis(20);
const LOAD_MAX_DURATION: Duration = Duration::from_secs(45);
/// How long a scenario waits for the load to make progress, or for recovery.
const PROGRESS_PATIENCE: Duration = Duration::from_secs(30);
const CONVERGENCE_PATIENCE: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------
// A client that classifies every answer.

/// How one request ended, as the client saw it.
#[derive(Debug)]
enum Outcome {
    /// Any HTTP answer, with its body parsed when it is JSON.
    Answered { status: StatusCode, content_type: String, body: Value },
    /// The TCP connect failed: nothing was sent, nothing can have happened.
    Refused,
    /// Sent but no complete answer (reset, closed, timed out): the outcome is unknown.
    Broken(String),
}

impl Outcome {
    fn ok_body(&self) -> Option<&Value> {
        match self {
            Outcome::Answered { status, body, .. } if status.is_success() => Some(body),
            _ => None,
        }
    }

    /// The request may or may not have taken effect.
    fn is_uncertain(&self) -> bool {
        match self {
            Outcome::Answered { status, .. } => status.is_server_error(),
            Outcome::Refused => false,
            Outcome::Broken(_) => true,
        }
    }
}

/// Counters of one load run, by outcome.
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    accepted: AtomicU64,
    /// 502/503/504 problems: an upstream or backend was known to be down.
    unavailable: AtomicU64,
    /// Any other status that is not a success.
    other_status: AtomicU64,
    refused: AtomicU64,
    broken: AtomicU64,
    /// Iterations where every call of the iteration succeeded: progress of the system as a whole.
    clean_iterations: AtomicU64,
    /// A list read that did not show a write acknowledged before it.
    stale_reads: AtomicU64,
    first_errors: Mutex<Vec<String>>,
}

impl Tally {
    fn record(&self, what: &str, outcome: &Outcome) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        let error = match outcome {
            Outcome::Answered { status, .. } if status.is_success() => {
                self.accepted.fetch_add(1, Ordering::Relaxed);
                None
            }
            Outcome::Answered { status, body, .. } if [502, 503, 504].contains(&status.as_u16()) => {
                self.unavailable.fetch_add(1, Ordering::Relaxed);
                Some(format!("{what}: {status} {}", body["detail"]))
            }
            Outcome::Answered { status, body, .. } => {
                self.other_status.fetch_add(1, Ordering::Relaxed);
                Some(format!("{what}: {status} {body}"))
            }
            Outcome::Refused => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Some(format!("{what}: connection refused"))
            }
            Outcome::Broken(error) => {
                self.broken.fetch_add(1, Ordering::Relaxed);
                Some(format!("{what}: {error}"))
            }
        };
        if let Some(error) = error {
            if let Ok(mut errors) = self.first_errors.lock() {
                if errors.len() < 5 {
                    errors.push(error);
                }
            }
        }
    }

    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Every answer that was not a success.
    fn failed(&self) -> u64 {
        Self::get(&self.unavailable)
            + Self::get(&self.other_status)
            + Self::get(&self.refused)
            + Self::get(&self.broken)
    }

    fn report(&self) -> String {
        let errors = self.first_errors.lock().map(|e| e.join(" | ")).unwrap_or_default();
        format!(
            "requests sent {}, accepted {}, failed {} (unavailable 5xx {}, other status {}, refused {}, broken {}); \
             clean iterations {}, stale reads {}{}",
            Self::get(&self.sent),
            Self::get(&self.accepted),
            self.failed(),
            Self::get(&self.unavailable),
            Self::get(&self.other_status),
            Self::get(&self.refused),
            Self::get(&self.broken),
            Self::get(&self.clean_iterations),
            Self::get(&self.stale_reads),
            if errors.is_empty() { String::new() } else { format!("; first errors: {errors}") }
        )
    }
}

#[derive(Clone)]
struct User {
    token: String,
}

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(base: &str) -> Self {
        Self { http: http_client(), base: base.to_owned() }
    }

    async fn call(&self, user: Option<&User>, method: Method, path: &str, body: Option<Value>) -> Outcome {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(user) = user {
            request = request.bearer_auth(&user.token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                let content_type =
                    response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                match response.bytes().await {
                    Ok(bytes) => Outcome::Answered {
                        status,
                        content_type,
                        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                    },
                    Err(error) => Outcome::Broken(format!("body: {error}")),
                }
            }
            Err(error) if error.is_connect() => Outcome::Refused,
            Err(error) => Outcome::Broken(format!("{error:?}")),
        }
    }

    /// Registers and logs in a fresh user through this base URL.
    async fn sign_up(&self) -> User {
        let credentials =
            json!({ "email": format!("{}@example.com", unique_name("fault")), "password": "fault-password" });
        let registered = self.call(None, Method::POST, "/users/register", Some(credentials.clone())).await;
        assert!(registered.ok_body().is_some(), "register: {registered:?}");
        let login = self.call(None, Method::POST, "/users/login", Some(credentials)).await;
        let token = login.ok_body().and_then(|b| b["accessToken"].as_str()).map(str::to_owned);
        User { token: token.unwrap_or_else(|| panic!("login: {login:?}")) }
    }

    /// Every item of a paginated list, or None when any page fails.
    async fn all_pages(&self, user: &User, path: &str) -> Option<Vec<Value>> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page_path = match &cursor {
                Some(cursor) => format!("{path}?limit=100&cursor={cursor}"),
                None => format!("{path}?limit=100"),
            };
            let outcome = self.call(Some(user), Method::GET, &page_path, None).await;
            let page = outcome.ok_body()?;
            items.extend(page["items"].as_array()?.iter().cloned());
            match page["nextCursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return Some(items),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Load: a bounded number of workers, each a bounded loop, stopped by the scenario.

/// What the load's writes did, as acknowledged (or not) to the client.
#[derive(Default)]
struct Ledger {
    /// (user index, task id) of every 201 on POST /tasks.
    created: Vec<(usize, String)>,
    /// POST /tasks answered with an unknown outcome (5xx, broken).
    uncertain_creates: usize,
    /// (user index, task id) of every 200 on POST /tasks/{id}/complete.
    completed: Vec<(usize, String)>,
    /// Completions with an unknown outcome.
    uncertain_completes: Vec<(usize, String)>,
}

#[derive(Clone, Copy)]
enum Workload {
    /// Create a task, then complete it.
    CreateComplete,
    /// Create a task, then read the list and check the task is in it (one worker per user).
    CreateThenList,
    /// Create, read the list, read the task, read /users/me and /notifications.
    Mixed,
}

struct Load {
    tally: Arc<Tally>,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    started: Instant,
}

struct Worker {
    api: Api,
    users: Arc<Vec<User>>,
    user_index: usize,
    tally: Arc<Tally>,
    ledger: Arc<Mutex<Ledger>>,
}

impl Worker {
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn create(&self, title: String) -> Option<String> {
        let user = &self.users[self.user_index];
        let outcome = self.api.call(Some(user), Method::POST, "/tasks", Some(json!({ "title": title }))).await;
        self.tally.record("POST /tasks", &outcome);
        if let Some(id) = outcome.ok_body().and_then(|b| b["id"].as_str()) {
            self.ledger().created.push((self.user_index, id.to_owned()));
            return Some(id.to_owned());
        }
        if outcome.is_uncertain() {
            self.ledger().uncertain_creates += 1;
        }
        None
    }

    async fn complete(&self, id: &str) -> bool {
        let user = &self.users[self.user_index];
        let outcome = self.api.call(Some(user), Method::POST, &format!("/tasks/{id}/complete"), None).await;
        self.tally.record("POST /tasks/{id}/complete", &outcome);
        let entry = (self.user_index, id.to_owned());
        if outcome.ok_body().is_some() {
            self.ledger().completed.push(entry);
            true
        } else {
            if outcome.is_uncertain() {
                self.ledger().uncertain_completes.push(entry);
            }
            false
        }
    }

    async fn read(&self, what: &str, path: &str) -> Option<Value> {
        let outcome = self.api.call(Some(&self.users[self.user_index]), Method::GET, path, None).await;
        self.tally.record(what, &outcome);
        outcome.ok_body().cloned()
    }

    /// One iteration; true when every call in it succeeded.
    async fn iteration(&self, workload: Workload, n: usize) -> bool {
        let Some(id) = self.create(format!("fault task {n}")).await else { return false };
        match workload {
            Workload::CreateComplete => self.complete(&id).await,
            Workload::CreateThenList => {
                let Some(list) = self.read("GET /tasks", "/tasks?limit=100").await else { return false };
                let newest = list["items"][0]["id"].as_str();
                if newest != Some(id.as_str()) {
                    self.tally.stale_reads.fetch_add(1, Ordering::Relaxed);
                    let mut errors = self.tally.first_errors.lock().unwrap_or_else(|p| p.into_inner());
                    if errors.len() < 5 {
                        errors.push(format!("stale list: newest {newest:?}, just created {id}"));
                    }
                    return false;
                }
                true
            }
            Workload::Mixed => {
                let list = self.read("GET /tasks", "/tasks?limit=5").await.is_some();
                let one = self.read("GET /tasks/{id}", &format!("/tasks/{id}")).await.is_some();
                let me = self.read("GET /users/me", "/users/me").await.is_some();
                let notifications = self.read("GET /notifications", "/notifications?limit=5").await.is_some();
                list && one && me && notifications
            }
        }
    }
}

impl Load {
    /// `concurrency` workers, spread over `users` round-robin, each looping until stopped
    /// (or its iteration and time caps).
    fn start(workload: Workload, edge: &str, users: &[User], concurrency: usize) -> Self {
        let tally = Arc::new(Tally::default());
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let users = Arc::new(users.to_vec());
        let started = Instant::now();
        let workers = (0..concurrency)
            .map(|index| {
                let worker = Worker {
                    api: Api::new(edge),
                    users: users.clone(),
                    user_index: index % users.len(),
                    tally: tally.clone(),
                    ledger: ledger.clone(),
                };
                let stop = stop.clone();
                tokio::spawn(async move {
                    for n in 0..LOAD_MAX_ITERATIONS_PER_WORKER {
                        if stop.load(Ordering::Relaxed) || started.elapsed() > LOAD_MAX_DURATION {
                            break;
                        }
                        if worker.iteration(workload, n).await {
                            worker.tally.clean_iterations.fetch_add(1, Ordering::Relaxed);
                        } else {
                            tokio::time::sleep(FAILED_ITERATION_PAUSE).await;
                        }
                    }
                })
            })
            .collect();
        Self { tally, ledger, stop, workers, started }
    }

    fn clean(&self) -> u64 {
        Tally::get(&self.tally.clean_iterations)
    }

    /// Waits until `more` further iterations have fully succeeded.
    async fn progress(&self, more: u64, what: &str) {
        let target = self.clean() + more;
        eventually(&format!("{more} clean iterations {what}"), PROGRESS_PATIENCE, || {
            let done = self.clean() >= target;
            self.assert_running();
            async move { done.then_some(()) }
        })
        .await;
    }

    /// Waits until `more` further requests have been answered, whatever the answer.
    async fn answered(&self, more: u64, what: &str) {
        let target = Tally::get(&self.tally.sent) + more;
        eventually(&format!("{more} requests {what}"), PROGRESS_PATIENCE, || {
            let done = Tally::get(&self.tally.sent) >= target;
            self.assert_running();
            async move { done.then_some(()) }
        })
        .await;
    }

    /// Waiting for progress of a load that has hit its caps would only time out.
    fn assert_running(&self) {
        assert!(
            !self.workers.iter().all(JoinHandle::is_finished),
            "the load reached its caps ({LOAD_MAX_ITERATIONS_PER_WORKER} iterations per worker or \
             {LOAD_MAX_DURATION:?}) before the scenario was done: {}",
            self.tally.report()
        );
    }

    /// Stops the workers, waits for their last requests, and hands back what they counted.
    async fn finish(self) -> (Arc<Tally>, Ledger, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            worker.await.expect("load worker does not panic");
        }
        let ledger = std::mem::take(&mut *self.ledger.lock().unwrap_or_else(|p| p.into_inner()));
        (self.tally, ledger, self.started.elapsed())
    }
}

// ---------------------------------------------------------------------------------------
// Checks shared by the scenarios.

async fn users(api: &Api, count: usize) -> Vec<User> {
    let mut users = Vec::new();
    for _ in 0..count {
        users.push(api.sign_up().await);
    }
    users
}

/// Sum of every sample of a metric on a process's /metrics, None if unreachable.
async fn metric(base: &str, name: &str) -> Option<f64> {
    let text = http_client().get(format!("{base}/metrics")).send().await.ok()?.text().await.ok()?;
    let samples = text.lines().filter(|line| !line.starts_with('#')).filter_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        (series == name || series.starts_with(&format!("{name}{{"))).then(|| value.parse::<f64>().ok()).flatten()
    });
    Some(samples.sum())
}

/// Messages (ready and unacknowledged) in svc-notify's queue, asked of the broker's CLI:
/// the test broker's, or the local cluster's when the services were given several nodes.
async fn queue_depth(system: &System) -> Option<u64> {
    if system.amqp_url.contains(',') {
        let depth = RabbitCluster::run(&["depth", &system.notify_queue]).await.ok()?;
        return depth.parse().ok();
    }
    let queue = &system.notify_queue;
    let output = tokio::process::Command::new("rabbitmqctl")
        .args(["list_queues", "-q", "--no-table-headers", "name", "messages"])
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines().find_map(|line| {
        let (name, messages) = line.split_once(char::is_whitespace)?;
        (name == queue).then(|| messages.trim().parse().ok()).flatten()
    })
}

/// Waits until nothing is left to deliver: every svc-tasks outbox empty and svc-notify's
/// queue empty, so the notifications read next are final.
async fn wait_quiet(system: &System) {
    let tasks = system.tasks_urls.clone();
    eventually("outboxes and the notify queue drained", CONVERGENCE_PATIENCE, || {
        let tasks = tasks.clone();
        async move {
            for url in &tasks {
                // A replica that is down has nothing in flight of its own (the outbox is in MongoDB).
                if let Some(backlog) = metric(url, "outbox_backlog").await {
                    if backlog > 0.0 {
                        return None;
                    }
                }
            }
            (queue_depth(system).await? == 0).then_some(())
        }
    })
    .await;
}

/// Notification counts per (type, taskId) for every user.
async fn notifications(api: &Api, users: &[User]) -> Option<BTreeMap<(String, String), u64>> {
    let mut counts = BTreeMap::new();
    for user in users {
        for item in api.all_pages(user, "/notifications").await? {
            let key = (item["type"].as_str()?.to_owned(), item["taskId"].as_str()?.to_owned());
            *counts.entry(key).or_insert(0) += 1;
        }
    }
    Some(counts)
}

/// What [`check_notifications`] found.
struct NotificationReport {
    expected: usize,
    notifications: u64,
    duplicates: u64,
    missing: usize,
    unexpected: usize,
}

impl NotificationReport {
    fn line(&self) -> String {
        format!(
            "notifications expected {}, stored {}, missing {}, duplicates {}, unexpected {}",
            self.expected, self.notifications, self.missing, self.duplicates, self.unexpected
        )
    }
}

/// Every accepted create and completion has exactly one notification of its type, and
/// nothing else has one except writes whose outcome the client could not know.
async fn check_notifications(system: &System, api: &Api, users: &[User], ledger: &Ledger) -> NotificationReport {
    let expected: BTreeSet<(String, String)> = ledger
        .created
        .iter()
        .map(|(_, id)| ("task.created".to_owned(), id.clone()))
        .chain(ledger.completed.iter().map(|(_, id)| ("task.completed".to_owned(), id.clone())))
        .collect();
    let uncertain: BTreeSet<String> = ledger.uncertain_completes.iter().map(|(_, id)| id.clone()).collect();
    eventually("a notification for every accepted write", CONVERGENCE_PATIENCE, || async {
        let counts = notifications(api, users).await?;
        expected.iter().all(|key| counts.contains_key(key)).then_some(())
    })
    .await;
    wait_quiet(system).await;
    let counts = notifications(api, users).await.expect("notifications readable");
    let missing = expected.iter().filter(|key| !counts.contains_key(*key)).count();
    let duplicates = counts.values().filter(|n| **n > 1).map(|n| n - 1).sum();
    let created_ids: BTreeSet<&String> = ledger.created.iter().map(|(_, id)| id).collect();
    let unexpected_created =
        counts.keys().filter(|(kind, id)| kind == "task.created" && !created_ids.contains(id)).count();
    let unexpected_completed = counts
        .keys()
        .filter(|(kind, id)| kind == "task.completed" && !expected.contains(&(kind.clone(), id.clone())))
        .filter(|(_, id)| !uncertain.contains(id))
        .count();
    NotificationReport {
        expected: expected.len(),
        notifications: counts.values().sum(),
        duplicates,
        missing,
        // Creates with an unknown outcome may have created a task the client never saw.
        unexpected: unexpected_created.saturating_sub(ledger.uncertain_creates) + unexpected_completed,
    }
}

/// Every task acknowledged with 201 is there, read through `api`; returns how many are missing.
async fn missing_tasks(api: &Api, users: &[User], ledger: &Ledger) -> usize {
    let mut by_user: HashMap<usize, BTreeSet<String>> = HashMap::new();
    for (user, id) in &ledger.created {
        by_user.entry(*user).or_default().insert(id.clone());
    }
    let mut missing = 0;
    for (user, ids) in by_user {
        let listed: BTreeSet<String> = api
            .all_pages(&users[user], "/tasks")
            .await
            .expect("task list readable")
            .iter()
            .filter_map(|t| t["id"].as_str().map(str::to_owned))
            .collect();
        missing += ids.difference(&listed).count();
    }
    missing
}

/// Prints what a test injected with the load's, the notifications' and the events'
/// figures, then checks the outcome: no failure but 503s (a write of unknown outcome, which
/// the notification check allows for), and exactly one notification per accepted write.
async fn conclude(system: &System, injected: &str, tally: &Tally, ledger: &Ledger, report: &NotificationReport) {
    println!(
        "[faults] {injected}; {}; tasks created {}, completed {}, uncertain completions {}; {}; {}",
        tally.report(),
        ledger.created.len(),
        ledger.completed.len(),
        ledger.uncertain_completes.len(),
        report.line(),
        event_figures(system).await
    );
    assert_eq!(tally.failed(), Tally::get(&tally.unavailable), "only 503s: {}", tally.report());
    assert_eq!((report.missing, report.duplicates, report.unexpected), (0, 0, 0));
}

async fn event_figures(system: &System) -> String {
    let mut published = 0.0;
    for url in &system.tasks_urls {
        published += metric(url, "events_published_total").await.unwrap_or(0.0);
    }
    let consumed = metric(&system.notify_url, "events_consumed_total").await.unwrap_or(0.0);
    let duplicates = metric(&system.notify_url, "events_duplicate_total").await.unwrap_or(0.0);
    let retried = metric(&system.notify_url, "events_retried_total").await.unwrap_or(0.0);
    format!(
        "events published {published} (since the replicas' start), consumed {consumed}, \
         duplicate deliveries absorbed {duplicates}, retried {retried} (since svc-notify's start)"
    )
}

async fn timed<T>(work: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let result = work.await;
    (result, started.elapsed())
}

// ---------------------------------------------------------------------------------------
// The broker: stopped and always started again.

/// Runs `rabbitmqctl start_app` and waits for the AMQP port when dropped, whatever happened.
struct BrokerStopped {
    amqp_addr: String,
}

impl BrokerStopped {
    async fn stop() -> Self {
        let guard = Self { amqp_addr: todo_e2e::host_and_port(&Backends::from_env().amqp_url).0 };
        let status = tokio::process::Command::new("rabbitmqctl").arg("stop_app").output().await;
        assert!(status.as_ref().is_ok_and(|o| o.status.success()), "rabbitmqctl stop_app: {status:?}");
        guard
    }

    async fn start(self) {
        drop(self);
    }
}

impl Drop for BrokerStopped {
    fn drop(&mut self) {
        let started = std::process::Command::new("rabbitmqctl").arg("start_app").output();
        if !started.as_ref().is_ok_and(|o| o.status.success()) {
            eprintln!("rabbitmqctl start_app failed: {started:?}");
        }
        // A plain loop: this runs in a destructor, possibly while unwinding.
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(&self.amqp_addr).is_err() {
            if Instant::now() > deadline {
                eprintln!("RabbitMQ is not accepting on {} after start_app", self.amqp_addr);
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

// ---------------------------------------------------------------------------------------
// A request held open in the middle of its body, to be in flight at a chosen moment.

struct SlowRequest {
    stream: TcpStream,
    rest: Vec<u8>,
}

impl SlowRequest {
    /// Sends the head and half the body of `POST path` to `base`, then makes sure the
    /// server has accepted the connection: a later connection to it got an answer, and
    /// the accept queue is first in, first out.
    ///
    /// With `handler_started`, the head asks `Expect: 100-continue` and the body waits for
    /// the `100 Continue` a hyper server sends once the handler reads the body: the
    /// request is then in flight for sure, not merely accepted (a connection whose head
    /// was not read yet counts as idle, and a graceful shutdown closes it).
    async fn begin(base: &str, path: &str, token: Option<&str>, body: &Value, handler_started: bool) -> Self {
        let addr = base.trim_start_matches("http://");
        let body = body.to_string().into_bytes();
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n",
            body.len()
        );
        if let Some(token) = token {
            head.push_str(&format!("authorization: Bearer {token}\r\n"));
        }
        if handler_started {
            head.push_str("expect: 100-continue\r\n");
        }
        head.push_str("\r\n");
        let mut stream = TcpStream::connect(addr).await.expect("slow request connects");
        let (first, rest) = body.split_at(body.len() / 2);
        stream.write_all(head.as_bytes()).await.expect("head sent");
        if handler_started {
            let mut interim = Vec::new();
            let mut byte = [0u8; 1];
            while !interim.ends_with(b"\r\n\r\n") {
                let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte)).await;
                assert!(matches!(read, Ok(Ok(1))), "{base}: no 100 Continue for the slow request");
                interim.push(byte[0]);
            }
            assert!(interim.starts_with(b"HTTP/1.1 100"), "{}", String::from_utf8_lossy(&interim));
        }
        stream.write_all(first).await.expect("half the body sent");
        let probe = http_client().get(format!("{base}/healthz")).send().await;
        assert!(probe.is_ok_and(|r| r.status() == 200), "{base} answers while the slow request waits");
        Self { stream, rest: rest.to_vec() }
    }

    /// Sends the rest of the body and reads the answer's status and JSON body.
    async fn finish(mut self) -> Result<(u16, Value), String> {
        self.stream.write_all(&self.rest).await.map_err(|e| format!("rest of body: {e}"))?;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(15), self.stream.read_to_end(&mut answer)).await;
        match read {
            Err(_) => return Err("no answer within 15 s".into()),
            Ok(Err(e)) if answer.is_empty() => return Err(format!("read: {e}")),
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&answer);
        let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok());
        let body = text.split_once("\r\n\r\n").and_then(|(_, body)| serde_json::from_str(body).ok());
        status.map(|status| (status, body.unwrap_or(Value::Null))).ok_or_else(|| format!("no status in {text:?}"))
    }
}

/// True once `base` refuses connections (its listener is closed), within `patience`.
async fn listener_closed(base: &str, patience: Duration) -> bool {
    let addr = base.trim_start_matches("http://").to_owned();
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        if TcpStream::connect(&addr).await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

// ---------------------------------------------------------------------------------------
// The scenarios.

/// 1. RabbitMQ stopped and started while tasks are created and completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_loses_and_doubles_no_notification() {
    let _serial = SERIAL.lock().await;
    let system = System::start().await;
    let api = Api::new(&system.edge_url);
    let users = users(&api, 3).await;

    let load = Load::start(Workload::CreateComplete, &system.edge_url, &users, 2);
    load.progress(5, "before the broker stops").await;
    let (broker, stop_took) = timed(BrokerStopped::stop()).await;
    let accepted_before = Tally::get(&load.tally.accepted);
    load.progress(10, "while the broker is stopped").await;
    let accepted_during = Tally::get(&load.tally.accepted) - accepted_before;
    let (_, start_took) = timed(broker.start()).await;
    load.progress(5, "after the broker is back").await;
    let (tally, ledger, ran) = load.finish().await;

    let (report, converged) = timed(check_notifications(&system, &api, &users, &ledger)).await;
    // Writes kept being accepted while the broker was down (10 clean iterations above). A
    // 503 from an overloaded database is possible on a busy machine: such a write has an
    // unknown outcome, which the notification check allows for; nothing else may fail.
    let injected = format!(
        "broker: injected `rabbitmqctl stop_app` ({stop_took:.1?}) then `start_app` ({start_took:.1?}) \
         under create+complete load (2 workers, {ran:.1?}); requests accepted while stopped {accepted_during}; \
         converged in {converged:.1?}"
    );
    conclude(&system, &injected, &tally, &ledger, &report).await;
}

/// 2. Redis cut off mid-load: every list read shows the writes acknowledged before it,
/// during the outage and after Redis returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_never_serves_a_stale_list() {
    let _serial = SERIAL.lock().await;
    let system = System::start_with_options(Options { proxy_redis: true, ..Options::default() }).await;
    let redis = system.redis_proxy.as_ref().expect("redis proxy");
    let api = Api::new(&system.edge_url);
    let users = users(&api, 4).await;
    let (load_users, probe) = users.split_at(3);
    let probe = &probe[0];

    let load = Load::start(Workload::CreateThenList, &system.edge_url, load_users, 3);
    load.progress(10, "before Redis is cut").await;
    // The probe user's list is cached now; the write during the outage cannot bump its version.
    assert!(api.call(Some(probe), Method::GET, "/tasks", None).await.ok_body().is_some());
    assert!(api.call(Some(probe), Method::GET, "/tasks", None).await.ok_body().is_some());

    let cut = redis.cut_until_dropped();
    let written_in_outage = api.call(Some(probe), Method::POST, "/tasks", Some(json!({ "title": "in outage" }))).await;
    let written_in_outage = written_in_outage.ok_body().expect("a write while Redis is down")["id"].clone();
    let listed = api.call(Some(probe), Method::GET, "/tasks", None).await;
    assert_eq!(listed.ok_body().expect("a read while Redis is down")["items"][0]["id"], written_in_outage);
    load.progress(15, "while Redis is cut").await;
    cut.restore();

    // Right after Redis returns is when a list cached before the outage could come back:
    // read until 20 reads in a row are fresh (bounded), noting how long stale lists lasted.
    let mut probe_reads = 0;
    let mut probe_stale = 0;
    let mut stale_for = Duration::ZERO;
    let mut fresh_in_a_row = 0;
    let hits_before = metric(&system.tasks_url, "cache_requests_total{result=\"hit\"}").await.unwrap_or(0.0);
    let restored_at = Instant::now();
    while fresh_in_a_row < 20 && restored_at.elapsed() < Duration::from_secs(10) && probe_reads < 2000 {
        let listed = api.call(Some(probe), Method::GET, "/tasks", None).await;
        let Some(body) = listed.ok_body() else { continue };
        probe_reads += 1;
        if body["items"][0]["id"] == written_in_outage {
            fresh_in_a_row += 1;
        } else {
            probe_stale += 1;
            fresh_in_a_row = 0;
            stale_for = restored_at.elapsed();
        }
    }
    let hits_after = metric(&system.tasks_url, "cache_requests_total{result=\"hit\"}").await.unwrap_or(0.0);
    load.progress(15, "after Redis is back").await;
    let (tally, ledger, ran) = load.finish().await;
    let missing = missing_tasks(&api, load_users, &ledger).await;
    let cache = [
        ("hit", metric(&system.tasks_url, "cache_requests_total{result=\"hit\"}").await),
        ("miss", metric(&system.tasks_url, "cache_requests_total{result=\"miss\"}").await),
        ("error", metric(&system.tasks_url, "cache_requests_total{result=\"error\"}").await),
    ];
    println!(
        "[faults] redis: injected a cut of the proxy in front of Redis under create-then-list load \
         (3 workers, {ran:.1?}); {}; tasks created {}, missing afterwards {missing}; \
         probe: a write during the outage, then {probe_reads} list reads after Redis returned, stale {probe_stale} \
         during the first {stale_for:.2?} (cache hits among the reads {}); cache lookups {cache:?}; {}",
        tally.report(),
        ledger.created.len(),
        hits_after - hits_before,
        redis.describe()
    );
    // A Redis outage fails no request; only an overloaded database may answer 503.
    assert_eq!(tally.failed(), Tally::get(&tally.unavailable), "only 503s: {}", tally.report());
    assert_eq!(Tally::get(&tally.stale_reads), 0, "no list read misses a write acknowledged before it");
    assert_eq!(probe_stale, 0, "no stale list once Redis is back");
    assert_eq!(missing, 0);
}

/// 3. MongoDB cut off: quick 503 problems, /readyz 503, and recovery without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_answers_503_quickly_and_recovers_without_restarts() {
    let _serial = SERIAL.lock().await;
    let system = System::start_with_options(Options { proxy_mongodb: true, ..Options::default() }).await;
    let mongodb = system.mongodb_proxy.as_ref().expect("mongodb proxy");
    let api = Api::new(&system.edge_url);
    let user = api.sign_up().await;
    let task = api.call(Some(&user), Method::POST, "/tasks", Some(json!({ "title": "before" }))).await;
    let task_id = task.ok_body().expect("task created")["id"].as_str().expect("id").to_owned();
    let pids: Vec<_> = system.process_names().iter().map(|name| system.pid(name)).collect();
    let credentials = json!({ "email": "nobody@example.com", "password": "whatever-password" });
    let calls: Vec<(Method, String, Option<Value>)> = vec![
        (Method::POST, "/users/login".into(), Some(credentials)),
        (Method::GET, "/users/me".into(), None),
        (Method::GET, "/tasks".into(), None),
        (Method::POST, "/tasks".into(), Some(json!({ "title": "during" }))),
        (Method::GET, format!("/tasks/{task_id}"), None),
        (Method::POST, format!("/tasks/{task_id}/complete"), None),
        (Method::GET, "/notifications".into(), None),
    ];

    let cut = mongodb.cut_until_dropped();
    let tally = Tally::default();
    let mut slowest = Duration::ZERO;
    let mut wrong = Vec::new();
    let mut timings = Vec::new();
    for (method, path, body) in &calls {
        let (outcome, took) = timed(api.call(Some(&user), method.clone(), path, body.clone())).await;
        tally.record(path, &outcome);
        slowest = slowest.max(took);
        timings.push(format!("{method} {} {took:.2?}", path.replace(&task_id, "{id}")));
        match &outcome {
            Outcome::Answered { status, content_type, .. }
                if status.as_u16() == 503 && content_type == "application/problem+json" => {}
            other => wrong.push(format!("{method} {path}: {other:?} after {took:?}")),
        }
    }
    let mut readiness = Vec::new();
    for url in [&system.users_url, &system.tasks_url, &system.notify_url] {
        let (outcome, took) = timed(api_at(url).call(None, Method::GET, "/readyz", None)).await;
        slowest = slowest.max(took);
        if let Outcome::Answered { status, .. } = outcome {
            readiness.push(status.as_u16());
        }
    }
    drop(cut);

    let (_, recovered_in) = timed(eventually("every call succeeds again", PROGRESS_PATIENCE, || async {
        for (method, path, body) in calls.iter().skip(1) {
            api.call(Some(&user), method.clone(), path, body.clone()).await.ok_body()?;
        }
        for url in [&system.users_url, &system.tasks_url, &system.notify_url] {
            api_at(url).call(None, Method::GET, "/readyz", None).await.ok_body()?;
        }
        Some(())
    }))
    .await;
    // The consumer is back too: a completion made after the outage is notified.
    let fresh = api.call(Some(&user), Method::POST, "/tasks", Some(json!({ "title": "after" }))).await;
    let fresh = fresh.ok_body().expect("created after the outage")["id"].as_str().expect("id").to_owned();
    assert!(api.call(Some(&user), Method::POST, &format!("/tasks/{fresh}/complete"), None).await.ok_body().is_some());
    eventually("the notification of a completion after the outage", PROGRESS_PATIENCE, || async {
        let items = api.all_pages(&user, "/notifications").await?;
        items.iter().any(|n| n["type"] == "task.completed" && n["taskId"] == fresh.as_str()).then_some(())
    })
    .await;
    let pids_after: Vec<_> = system.process_names().iter().map(|name| system.pid(name)).collect();

    println!(
        "[faults] mongodb: injected a cut of the proxy in front of MongoDB (all services); {} calls through the \
         edge: {}; answer times: {}; slowest answer {slowest:.2?}; /readyz of users, tasks, notify: {readiness:?}; restored: \
         every call and /readyz 200 again in {recovered_in:.1?}, same processes: {}; {}",
        calls.len(),
        tally.report(),
        timings.join(", "),
        pids == pids_after,
        mongodb.describe()
    );
    assert!(wrong.is_empty(), "not a 503 problem: {wrong:#?}");
    assert!(slowest < Duration::from_secs(10), "an answer took {slowest:?}");
    assert_eq!(readiness, [503, 503, 503]);
    assert_eq!(pids, pids_after);
}

fn api_at(base: &str) -> Api {
    Api::new(base)
}

/// 4. svc-notify killed (SIGKILL) mid-stream and started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_killed_mid_stream_loses_and_doubles_nothing() {
    let _serial = SERIAL.lock().await;
    let mut system = System::start().await;
    let api = Api::new(&system.edge_url);
    let users = users(&api, 3).await;

    let load = Load::start(Workload::CreateComplete, &system.edge_url, &users, 3);
    load.progress(5, "before svc-notify is killed").await;
    let consumed_first = metric(&system.notify_url, "events_consumed_total").await.unwrap_or(0.0);
    system.kill("svc-notify");
    load.progress(10, "while svc-notify is down").await;
    let (_, first_restart) = timed(system.restart("svc-notify")).await;
    // Mid-stream for real: killed again while it works through the backlog of the outage,
    // with deliveries prefetched and not yet acknowledged.
    let notify_url = system.notify_url.clone();
    let consumed_second = eventually("svc-notify consuming the backlog", PROGRESS_PATIENCE, || async {
        metric(&notify_url, "events_consumed_total").await.filter(|consumed| *consumed >= 1.0)
    })
    .await;
    let backlog = queue_depth(&system).await;
    system.kill("svc-notify");
    let (_, second_restart) = timed(system.restart("svc-notify")).await;
    load.progress(5, "after svc-notify is back").await;
    let (tally, ledger, ran) = load.finish().await;

    let report = check_notifications(&system, &api, &users, &ledger).await;
    // Task writes do not depend on svc-notify; only an overloaded database may answer 503
    // (an unknown outcome the notification check allows for).
    let injected = format!(
        "notify SIGKILL: killed svc-notify after it had consumed {consumed_first} events, restarted \
         ({first_restart:.1?}), killed again after the new process had consumed {consumed_second} with {backlog:?} \
         messages still queued, restarted ({second_restart:.1?}); create+complete load (3 workers, {ran:.1?})"
    );
    conclude(&system, &injected, &tally, &ledger, &report).await;
}

/// 5. One of two svc-tasks replicas killed under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_one_tasks_replica_fails_at_most_the_requests_in_flight_on_it() {
    const CONCURRENCY: usize = 6;
    let _serial = SERIAL.lock().await;
    let mut system = System::start_with_options(Options { tasks_replicas: 2, ..Options::default() }).await;
    let api = Api::new(&system.edge_url);
    let users = users(&api, 3).await;

    let load = Load::start(Workload::Mixed, &system.edge_url, &users, CONCURRENCY);
    load.progress(20, "over both replicas").await;
    let sent_before = Tally::get(&load.tally.sent);
    system.kill("svc-tasks-2");
    load.progress(40, "with one replica").await;
    let (tally, ledger, ran) = load.finish().await;
    let missing = missing_tasks(&api, &users, &ledger).await;
    let served_by_survivor = metric(&system.tasks_url, "http_requests_total").await.unwrap_or(0.0);

    println!(
        "[faults] replica: SIGKILL on svc-tasks-2 of 2 after {sent_before} requests, mixed load ({CONCURRENCY} \
         workers, {ran:.1?}); {}; tasks created {}, missing afterwards {missing}; the surviving replica served \
         {served_by_survivor} requests",
        tally.report(),
        ledger.created.len(),
    );
    assert!(tally.failed() <= CONCURRENCY as u64, "more failures than requests in flight: {}", tally.report());
    assert_eq!(missing, 0);
}

/// 6. SIGTERM on each process under load, then a restart: in-flight requests complete and
/// no acknowledged write is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_loses_no_write() {
    let _serial = SERIAL.lock().await;
    let mut system = System::start().await;
    let api = Api::new(&system.edge_url);
    let users = users(&api, 2).await;
    let mut failures = Vec::new();
    let mut every_round = Ledger::default();

    for name in ["svc-users", "svc-tasks", "svc-notify", "edge"] {
        let target = system.url(name);
        let load = Load::start(Workload::Mixed, &system.edge_url, &users, 4);
        load.progress(6, &format!("before SIGTERM to {name}")).await;

        // A request held in the middle of its body at the moment of the signal; a task it
        // creates must exist afterwards like any other acknowledged write.
        let (in_flight, probe_user) = match name {
            "svc-users" => {
                let body =
                    json!({ "email": format!("{}@example.com", unique_name("drain")), "password": "drain-pass" });
                (Some(SlowRequest::begin(&target, "/users/register", None, &body, true).await), None)
            }
            "svc-tasks" | "edge" => {
                // Straight at svc-tasks a minted token will do; the edge gets one of the load's users.
                let probe = match name {
                    "edge" => users[0].clone(),
                    _ => User { token: system.token_for(&unique_name("drain")) },
                };
                let body = json!({ "title": "in flight" });
                // Straight at svc-tasks (hyper) the request can be seen to have started.
                let started = name == "svc-tasks";
                (Some(SlowRequest::begin(&target, "/tasks", Some(&probe.token), &body, started).await), Some(probe))
            }
            _ => (None, None),
        };
        let sent_before = Tally::get(&load.tally.sent);
        system.send_sigterm(name);
        let closed = listener_closed(&target, Duration::from_secs(2)).await;
        let in_flight = match in_flight {
            Some(request) => Some(request.finish().await),
            None => None,
        };
        let (status, exit_took) = timed(system.wait_exit(name)).await;
        load.answered(4, &format!("while {name} is down")).await;
        let (_, restart_took) = timed(system.restart(name)).await;
        load.progress(6, &format!("after {name} is back")).await;
        let (tally, mut ledger, ran) = load.finish().await;
        let in_flight_status = in_flight.as_ref().map(|answer| answer.as_ref().map(|(status, _)| *status));
        let in_flight_task =
            in_flight.as_ref().and_then(|answer| answer.as_ref().ok()).and_then(|(_, body)| body["id"].as_str());
        let mut in_flight_task_kept = None;
        if let (Some(id), Some(probe)) = (in_flight_task, &probe_user) {
            let read = api.call(Some(probe), Method::GET, &format!("/tasks/{id}"), None).await;
            in_flight_task_kept = Some(read.ok_body().is_some());
            if name == "edge" {
                ledger.created.push((0, id.to_owned()));
            }
        }
        let missing = missing_tasks(&api, &users, &ledger).await;

        println!(
            "[faults] SIGTERM {name}: sent after {sent_before} requests of mixed load (4 workers, {ran:.1?}); \
             listener closed at once: {closed}; request in flight at the signal: {in_flight_status:?}, its task kept: \
             {in_flight_task_kept:?}; exited {status} in \
             {exit_took:.1?}; restarted in {restart_took:.1?}; {}; tasks created {}, missing afterwards {missing}",
            tally.report(),
            ledger.created.len(),
        );
        if in_flight_status.is_some_and(|status| status != Ok(201)) {
            failures.push(format!("{name}: the request in flight got {in_flight:?}"));
        }
        if in_flight_task_kept == Some(false) {
            failures.push(format!("{name}: the task created by the request in flight is gone"));
        }
        if Tally::get(&tally.broken) > 0 {
            failures.push(format!("{name}: {} requests broken mid-way", Tally::get(&tally.broken)));
        }
        if !status.success() {
            failures.push(format!("{name}: exited {status}"));
        }
        if missing > 0 {
            failures.push(format!("{name}: {missing} acknowledged tasks missing"));
        }
        every_round.created.extend(ledger.created);
        every_round.uncertain_creates += ledger.uncertain_creates;
    }
    // The events of every acknowledged write made it through all four restarts.
    let report = check_notifications(&system, &api, &users, &every_round).await;
    println!("[faults] SIGTERM, all rounds: tasks created {}; {}", every_round.created.len(), report.line());
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!((report.missing, report.duplicates, report.unexpected), (0, 0, 0));
}

/// How long after a broker node is lost the flow of notifications is watched at least.
const STALL_WATCH: Duration = Duration::from_secs(10);
/// The flow must have resumed by then.
const STALL_PATIENCE: Duration = Duration::from_secs(90);

/// The longest time `counter` (at `from` now) stood still, sampled every 25 ms for at
/// least [`STALL_WATCH`] and until it moved: how long the flow it counts stalled.
async fn longest_pause(system: &System, counter: &str, from: f64) -> Duration {
    let started = std::time::Instant::now();
    let (mut last_value, mut last_change, mut longest) = (from, started, Duration::ZERO);
    loop {
        if let Some(value) = metric(&system.notify_url, counter).await.filter(|value| *value > last_value) {
            longest = longest.max(last_change.elapsed());
            (last_value, last_change) = (value, std::time::Instant::now());
        }
        if started.elapsed() >= STALL_WATCH && last_value > from {
            return longest.max(last_change.elapsed());
        }
        if started.elapsed() >= STALL_PATIENCE {
            let backlog = metric(&system.tasks_url, "outbox_backlog").await;
            let depth = queue_depth(system).await;
            panic!(
                "{counter} never moved in {STALL_PATIENCE:?}: outbox backlog {backlog:?}, queue depth {depth:?}, {}",
                event_figures(system).await
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The local RabbitMQ cluster of `ci/rabbit-cluster.sh`, taken down when dropped.
struct RabbitCluster {
    urls: String,
}

impl RabbitCluster {
    const SCRIPT: &'static str = concat!(env!("CARGO_MANIFEST_DIR"), "/../ci/rabbit-cluster.sh");

    /// A fresh cluster: whatever an earlier run left is taken down first.
    async fn up() -> Self {
        Self::run(&["down"]).await.unwrap_or_else(|error| panic!("no cluster left over: {error}"));
        let urls = Self::run(&["up", "3"]).await.unwrap_or_else(|error| panic!("a 3-node cluster: {error}"));
        Self { urls }
    }

    /// One command of the script; its stdout, or why it failed.
    async fn run(args: &[&str]) -> Result<String, String> {
        let output = tokio::process::Command::new("bash")
            .arg(Self::SCRIPT)
            .args(args)
            .output()
            .await
            .map_err(|error| error.to_string())?;
        if !output.status.success() {
            return Err(format!("{args:?}: {}", String::from_utf8_lossy(&output.stderr).trim()));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    async fn leader(&self, queue: &str) -> usize {
        let leader = Self::run(&["leader", queue]).await.expect("the queue has a leader");
        leader.parse().expect("a node index")
    }

    async fn kill(&self, node: usize) {
        Self::run(&["kill", &node.to_string()]).await.expect("node killed");
    }

    async fn close_connections(&self, node: usize) {
        Self::run(&["close-connections", &node.to_string()]).await.expect("connections closed");
    }
}

impl Drop for RabbitCluster {
    fn drop(&mut self) {
        // KEEP_RABBIT_CLUSTER=1 leaves it up for a look after a failure (then: `down`).
        if std::env::var_os("KEEP_RABBIT_CLUSTER").is_none() {
            let _ = std::process::Command::new("bash").arg(Self::SCRIPT).arg("down").output();
        }
    }
}

/// 7. A RabbitMQ node lost for good: on a 3-node cluster, the node leading svc-notify's
/// quorum queue is SIGKILLed under load (it is also the node both services are
/// connected to), then a second node's client connections are cut. Every accepted
/// write still gets exactly one notification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_a_broker_node_loses_and_doubles_no_notification() {
    let _serial = SERIAL.lock().await;
    let (cluster, formed) = timed(RabbitCluster::up()).await;
    let options = Options { amqp_url: Some(cluster.urls.clone()), ..Options::default() };
    let system = System::start_with_options(options).await;
    let api = Api::new(&system.edge_url);
    let users = users(&api, 3).await;

    let load = Load::start(Workload::CreateComplete, &system.edge_url, &users, 2);
    load.progress(5, "before a broker node is lost").await;
    let leader = cluster.leader(&system.notify_queue).await;
    let consumed_at_kill = metric(&system.notify_url, "events_consumed_total").await.unwrap_or(0.0);
    cluster.kill(leader).await;
    let stalled = longest_pause(&system, "events_consumed_total", consumed_at_kill).await;
    load.progress(10, "after the leading node died").await;
    let second = leader % 3 + 1;
    cluster.close_connections(second).await;
    load.progress(5, "after a second node's connections were cut").await;
    let (tally, ledger, ran) = load.finish().await;

    let (report, converged) = timed(check_notifications(&system, &api, &users, &ledger)).await;
    let injected = format!(
        "broker node lost: 3-node cluster formed in {formed:.1?}; SIGKILL of node {leader} (leader of \
         svc-notify's quorum queue) under create+complete load (2 workers, {ran:.1?}); longest pause of the \
         notifications after the kill {stalled:.1?}; then node {second}'s client connections closed; \
         converged in {converged:.1?}"
    );
    conclude(&system, &injected, &tally, &ledger, &report).await;
}
