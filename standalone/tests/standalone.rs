//! The standalone command as a newcomer runs it: start the binary on a fresh data
//! directory, walk through the README's curl steps via its edge, stop it with a signal,
//! start it again on the same directory and find everything still there.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use todo_test_support::otlp::Collector;
use todo_test_support::{eventually, http_client, unique_name};

const PATIENCE: Duration = Duration::from_secs(60);

/// A running `todo-standalone`; killed if a test fails before stopping it.
struct Standalone {
    child: Child,
    api: String,
}

impl Standalone {
    async fn start(data_dir: &Path, port: u16) -> Self {
        Self::start_with(data_dir, port, &[]).await
    }

    async fn start_with(data_dir: &Path, port: u16, env: &[(&str, &str)]) -> Self {
        let admin = format!("http://127.0.0.1:{}", std::iter::repeat_with(free_port).find(|p| *p != port).unwrap());
        let child = Command::new(env!("CARGO_BIN_EXE_todo-standalone"))
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .env("TODO_DATA_DIR", data_dir)
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("EDGE_ADMIN_ADDR", admin.trim_start_matches("http://"))
            .env("TODO_USERS_ADDR", "127.0.0.1:0")
            .env("TODO_TASKS_ADDR", "127.0.0.1:0")
            .env("TODO_NOTIFY_ADDR", "127.0.0.1:0")
            .env("BCRYPT_COST", "4")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("todo-standalone starts");
        let standalone = Self { child, api: format!("http://127.0.0.1:{port}") };
        let client = http_client();
        eventually("the edge and every upstream to be ready", PATIENCE, || async {
            let response = client.get(format!("{admin}/readyz")).send().await.ok()?;
            (response.status() == 200).then_some(())
        })
        .await;
        standalone
    }

    /// Sends `signal` (as `kill` names it) and waits for a clean exit.
    fn stop(mut self, signal: &str) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args([&format!("-{signal}"), &pid]).status().expect("kill runs");
        assert!(status.success(), "kill -{signal} {pid}");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait works") {
                assert!(status.success(), "todo-standalone exited with {status} after SIG{signal}");
                return;
            }
            assert!(Instant::now() < deadline, "todo-standalone did not stop after SIG{signal}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct DataDir(PathBuf);

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("bound").port()
}

async fn json_of(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status, "{:?}", response.url().path());
    response.json().await.unwrap_or(Value::Null)
}

#[tokio::test]
async fn the_readme_walk_through_works_and_survives_a_restart() {
    let data = DataDir(std::env::temp_dir().join(unique_name("todo-standalone-test")));
    let port = free_port();
    let client = http_client();
    let app = Standalone::start(&data.0, port).await;
    let api = app.api.clone();

    // The README's walk-through.
    let email = format!("{}@example.com", unique_name("carol"));
    let registered = json_of(
        client
            .post(format!("{api}/users/register"))
            .json(&json!({ "email": email, "password": "carol-password", "name": "Carol" }))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    let login = json!({ "email": email, "password": "carol-password" });
    let token = json_of(client.post(format!("{api}/users/login")).json(&login).send().await.unwrap(), 200).await
        ["accessToken"]
        .as_str()
        .expect("a token")
        .to_owned();
    let task = json_of(
        client
            .post(format!("{api}/tasks"))
            .bearer_auth(&token)
            .json(&json!({ "title": "Buy milk", "priority": "high" }))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    let task_id = task["id"].as_str().expect("a task id").to_owned();
    let completed =
        json_of(client.post(format!("{api}/tasks/{task_id}/complete")).bearer_auth(&token).send().await.unwrap(), 200)
            .await;
    assert_eq!(completed["status"], "completed");
    let completed_notifications = |body: &Value| -> Vec<Value> {
        body["items"]
            .as_array()
            .map(|items| items.iter().filter(|n| n["type"] == "task.completed").cloned().collect())
            .unwrap_or_default()
    };
    let notification = eventually("the completion's notification", PATIENCE, || async {
        let response = client.get(format!("{api}/notifications")).bearer_auth(&token).send().await.ok()?;
        let body: Value = response.json().await.ok()?;
        completed_notifications(&body).into_iter().next()
    })
    .await;
    assert_eq!(notification["message"], "Task \"Buy milk\" was completed");
    assert_eq!(notification["taskId"], task_id.as_str());
    // The demo users are there too.
    let alice = json!({ "email": "alice@example.com", "password": "alice-demo-password" });
    json_of(client.post(format!("{api}/users/login")).json(&alice).send().await.unwrap(), 200).await;

    app.stop("INT");
    let key = std::fs::read_to_string(data.0.join("jwt-signing.pem")).expect("the key is kept");
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "an Ed25519 key pair, PKCS#8 PEM");
    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data.0.join("jwt-signing.pem")), 0o600, "the key is private");
    assert_eq!(mode(&data.0), 0o700, "the data directory is private");
    assert_eq!(mode(&data.0.join("users.redb")), 0o600, "the user database is private");

    // Same directory, fresh process: the old token, the user, the task and exactly one
    // completion notification are all still there.
    let app = Standalone::start(&data.0, port).await;
    assert_eq!(std::fs::read_to_string(data.0.join("jwt-signing.pem")).unwrap(), key, "the key is reused");
    let me = json_of(client.get(format!("{api}/users/me")).bearer_auth(&token).send().await.unwrap(), 200).await;
    assert_eq!(me["id"], registered["id"]);
    assert_eq!(me["email"], email.as_str());
    let task =
        json_of(client.get(format!("{api}/tasks/{task_id}")).bearer_auth(&token).send().await.unwrap(), 200).await;
    assert_eq!(task["status"], "completed");
    assert_eq!(task["title"], "Buy milk");
    let notifications =
        json_of(client.get(format!("{api}/notifications")).bearer_auth(&token).send().await.unwrap(), 200).await;
    assert_eq!(completed_notifications(&notifications), vec![notification], "one completion, one notification");
    json_of(client.post(format!("{api}/users/login")).json(&login).send().await.unwrap(), 200).await;

    app.stop("TERM");
}

/// The same `OTEL_*` variables as the separate processes: one completion is one trace,
/// from the edge's span to svc-notify's handling of the event, under one service name.
#[tokio::test]
async fn a_completion_is_one_exported_trace() {
    let collector = Collector::start().await;
    let data = DataDir(std::env::temp_dir().join(unique_name("todo-standalone-traces")));
    let endpoint = collector.endpoint();
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "100")];
    let app = Standalone::start_with(&data.0, free_port(), &env).await;
    let (api, client) = (app.api.clone(), http_client());

    let alice = json!({ "email": "alice@example.com", "password": "alice-demo-password" });
    let login = json_of(client.post(format!("{api}/users/login")).json(&alice).send().await.unwrap(), 200).await;
    let token = login["accessToken"].as_str().expect("a token").to_owned();
    let created = client.post(format!("{api}/tasks")).bearer_auth(&token).json(&json!({ "title": "Traced" }));
    let task_id = json_of(created.send().await.unwrap(), 201).await["id"].as_str().unwrap().to_owned();
    let trace_id = uuid_hex();
    let completed = client
        .post(format!("{api}/tasks/{task_id}/complete"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    json_of(completed, 200).await;

    // The edge's span, svc-tasks' under it, and the consumer span under a publish: spans
    // leave as they end, in whatever order, so wait for all of them.
    let spans = eventually("the completion's trace through the in-process bus", PATIENCE, || async {
        let spans = collector.trace(&trace_id);
        let edge = spans.iter().find(|s| s.parent_span_id == "00f067aa0ba902b7")?;
        spans.iter().find(|s| s.kind == "server" && s.parent_span_id == edge.span_id)?;
        let consumer = spans.iter().find(|s| s.kind == "consumer")?;
        spans.iter().find(|s| s.kind == "producer" && s.span_id == consumer.parent_span_id)?;
        Some(spans)
    })
    .await;
    assert!(spans.iter().all(|s| s.service == "todo-standalone"), "{spans:#?}");
    app.stop("TERM");
}

fn uuid_hex() -> String {
    unique_name("t").rsplit('_').next().expect("a uuid").to_owned()
}
