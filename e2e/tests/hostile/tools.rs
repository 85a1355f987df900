//! Checks by outside tools, each skipped (with a note) when its tool is not installed,
//! unless `REQUIRE_TEST_TOOLS=1` (set by `ci/install-test-tools.sh` users such as CI)
//! makes a missing tool a failure: `promtool check metrics` on every process,
//! schemathesis against `openapi.yaml` through the edge, and headless Chromium calling
//! the API from an allowlisted and from a foreign origin.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use todo_e2e::{FreePorts, System};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::{metrics_text, sum_samples, User};

/// The program `name` if installed (found on PATH or at one of `extra` paths).
fn tool(name: &str, extra: &[PathBuf]) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join(name)).collect::<Vec<_>>())
        .unwrap_or_default();
    let found = extra.iter().cloned().chain(on_path).find(|path| path.is_file());
    if found.is_none() {
        let message = format!("{name} is not installed (bash ci/install-test-tools.sh installs it)");
        assert!(std::env::var("REQUIRE_TEST_TOOLS").as_deref() != Ok("1"), "{message}");
        eprintln!("skipped: {message}");
    }
    found
}

/// Runs `command` to completion, killing it after `limit`; returns (success, output).
fn run_bounded(mut command: Command, limit: Duration) -> (bool, String) {
    let log = tempfile::NamedTempFile::new().expect("log file");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(log.reopen().expect("log handle"))
        .stderr(log.reopen().expect("log handle"))
        .spawn()
        .expect("tool starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("tool state") {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = std::fs::read_to_string(log.path()).unwrap_or_default();
    match status {
        Some(status) => (status.success(), output),
        None => (false, format!("{output}\n(killed after {limit:?})")),
    }
}

/// Some of every kind of traffic, so every metric family has samples.
async fn traffic(system: &System) {
    let user = User::sign_up(&system.edge_url).await;
    let task = user.create_task("metrics").await;
    let id = task["id"].as_str().unwrap();
    user.send(Method::POST, &format!("/tasks/{id}/complete"), None).await;
    user.send(Method::GET, "/tasks/nope", None).await;
    user.send(Method::GET, "/tasks?limit=0", None).await;
    user.tasks().await;
    user.notifications().await;
    let stranger = User { token: "bad".into(), ..user.clone() };
    stranger.send(Method::GET, "/tasks", None).await;
    user.http.post(format!("{}/users/login", system.edge_url)).body("{}").send().await.unwrap();
}

#[tokio::test]
async fn promtool_accepts_every_process_metrics_after_traffic() {
    let Some(promtool) = tool("promtool", &[]) else { return };
    let system = System::start().await;
    traffic(&system).await;
    for (name, base) in [
        ("edge", &system.ops_url("edge")),
        ("svc-users", &system.users_url),
        ("svc-tasks", &system.tasks_url),
        ("svc-notify", &system.notify_url),
    ] {
        let text = metrics_text(base).await;
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &text).unwrap();
        let mut command = Command::new(&promtool);
        command.args(["check", "metrics"]).stdin(std::fs::File::open(file.path()).unwrap());
        let output = command.output().expect("promtool runs");
        let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        let families = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        println!(
            "promtool check metrics, {name}: {families} families, {}",
            if output.status.success() { "ok" } else { "FAILED" }
        );
        assert!(output.status.success(), "promtool on {name}'s metrics:\n{report}");
        assert!(families > 0, "{name} exposes no metrics");
    }
}

fn schemathesis_path() -> Vec<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    vec![home.join(".cache/todo-system/schemathesis-venv/bin/schemathesis")]
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_schema_mismatch() {
    let Some(schemathesis) = tool("schemathesis", &schemathesis_path()) else { return };
    let system = System::start().await;
    let user = User::sign_up(&system.edge_url).await;
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi.yaml");
    let max_examples = std::env::var("SCHEMATHESIS_MAX_EXAMPLES").unwrap_or_else(|_| "30".into());
    let reports = tempfile::tempdir().unwrap();
    let mut command = Command::new(schemathesis);
    command
        .arg("run")
        .arg(&spec)
        .args(["--url", &system.edge_url])
        .args(["--header", &format!("Authorization: Bearer {}", user.token)])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,\
             response_headers_conformance,ignored_auth",
        ])
        .args(["--max-examples", &max_examples, "--workers", "2", "--request-timeout", "20"])
        .args(["--seed", &std::env::var("SCHEMATHESIS_SEED").unwrap_or_else(|_| "20240501".into())])
        .args(["--report", "junit", "--report-dir"])
        .arg(reports.path())
        .arg("--no-color")
        .current_dir(reports.path())
        .env("SCHEMATHESIS_HOOKS", "")
        .env("NO_COLOR", "1");
    let started = Instant::now();
    let (passed, output) = run_bounded(command, Duration::from_secs(150));
    let summary: Vec<&str> =
        output.lines().filter(|l| l.contains("generated") || l.contains("passed") || l.contains("failed")).collect();
    println!("schemathesis ({max_examples} examples per operation) in {:.0} s:", started.elapsed().as_secs_f64());
    for line in summary.iter().rev().take(4).rev() {
        println!("  {}", line.trim());
    }
    assert!(passed, "schemathesis found problems:\n{output}");
}

/// Serves `page` to every request on `port` (127.0.0.1), until the task is dropped.
async fn serve_page(port: u16, page: String) -> tokio::task::JoinHandle<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("page port");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let page = page.clone();
            tokio::spawn(async move {
                let mut request = [0_u8; 4096];
                let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut request)).await;
                let (status, body) =
                    if request.starts_with(b"GET / ") { ("200 OK", page) } else { ("404 Not Found", String::new()) };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
                     Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    })
}

/// A page that creates a task through the edge (a JSON POST with a bearer token, so the
/// browser sends a preflight first), reads the list back and writes the outcome into
/// the DOM.
fn page(api: &str, token: &str) -> String {
    format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>cors</title></head><body>
<pre id="outcome">PENDING</pre>
<script>
(async () => {{
  const out = document.getElementById("outcome");
  const headers = {{ "Authorization": "Bearer {token}" }};
  try {{
    const created = await fetch("{api}/tasks", {{
      method: "POST",
      headers: {{ ...headers, "Content-Type": "application/json", "X-Request-Id": "browser-cors-check" }},
      body: JSON.stringify({{ title: "from the browser" }}),
    }});
    const task = await created.json();
    const list = await fetch("{api}/tasks", {{ headers }});
    const items = (await list.json()).items;
    out.textContent = "OK created=" + created.status + " id=" + task.id + " location=" + created.headers.get("location")
      + " request-id=" + created.headers.get("x-request-id") + " listed=" + list.status + ":" + items.length;
  }} catch (error) {{
    out.textContent = "BLOCKED " + error;
  }}
}})();
</script></body></html>"#
    )
}

/// Loads `url` in headless Chromium and returns the text of `#outcome` after scripts ran.
fn load_in_chromium(chromium: &Path, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut command = Command::new(chromium);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-extensions",
            "--no-first-run",
            "--no-default-browser-check",
            "--virtual-time-budget=15000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url);
    let (_, output) = run_bounded(command, Duration::from_secs(60));
    let start = output.find("<pre id=\"outcome\">").map(|i| i + "<pre id=\"outcome\">".len());
    match start.and_then(|start| output[start..].find("</pre>").map(|end| output[start..start + end].to_owned())) {
        Some(outcome) => outcome,
        None => panic!("no outcome in Chromium's DOM dump:\n{output}"),
    }
}

#[tokio::test]
async fn a_browser_calls_the_api_from_an_allowlisted_origin_and_is_blocked_from_another() {
    let Some(chromium) = tool("chromium", &[]) else { return };
    let mut ports = FreePorts::default();
    let (allowed_port, foreign_port) = (ports.take(), ports.take());
    drop(ports);
    let allowed_origin = format!("http://127.0.0.1:{allowed_port}");
    let system = System::start_with(|dir| {
        let shipped = std::fs::read_to_string(dir.join("cors.toml")).expect("shipped cors.toml");
        let ours = shipped.replace(
            r#"allowed_origins = ["http://localhost:3000", "http://127.0.0.1:3000"]"#,
            &format!(r#"allowed_origins = ["{allowed_origin}"]"#),
        );
        assert_ne!(ours, shipped, "the shipped cors.toml changed shape; update this test");
        std::fs::write(dir.join("cors.toml"), ours).unwrap();
    })
    .await;
    let user = User::sign_up(&system.edge_url).await;
    let html = page(&system.edge_url, &user.token);
    let _allowed = serve_page(allowed_port, html.clone()).await;
    let _foreign = serve_page(foreign_port, html).await;
    let preflights = || async {
        let text = metrics_text(&system.ops_url("edge")).await;
        sum_samples(&text, "edge_requests_total", |l| {
            l.contains("route=\"_preflight\"") && l.contains("status=\"204\"")
        })
    };

    let before = preflights().await;
    let allowed = tokio::task::spawn_blocking({
        let (chromium, url) = (chromium.clone(), format!("{allowed_origin}/"));
        move || load_in_chromium(&chromium, &url)
    })
    .await
    .unwrap();
    let answered = preflights().await - before;
    println!("browser from the allowlisted origin {allowed_origin}: {allowed} (preflights answered: {answered})");
    assert!(allowed.starts_with("OK created=201"), "allowlisted origin: {allowed}");
    assert!(allowed.contains("request-id=browser-cors-check"), "exposed headers are readable: {allowed}");
    assert!(allowed.contains("location=/tasks/"), "exposed headers are readable: {allowed}");
    assert!(allowed.ends_with("listed=200:1"), "{allowed}");
    assert!(answered >= 1.0, "the browser sent no preflight");

    let foreign_origin = format!("http://127.0.0.1:{foreign_port}");
    let foreign = tokio::task::spawn_blocking({
        let (chromium, url) = (chromium.clone(), format!("{foreign_origin}/"));
        move || load_in_chromium(&chromium, &url)
    })
    .await
    .unwrap();
    println!("browser from the foreign origin {foreign_origin}: {foreign}");
    assert!(foreign.starts_with("BLOCKED"), "a foreign origin got through: {foreign}");
    // The preflight failed, so the POST was never sent.
    let tasks: Vec<Value> = user.tasks().await;
    assert_eq!(tasks.len(), 1, "the foreign page created a task");
}
