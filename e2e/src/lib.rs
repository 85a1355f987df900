//! Starts the whole system as processes for end-to-end tests: the three services and
//! the edge, built by `cargo test --workspace`, on free ports, with a policy directory
//! of their own, a fresh database per service and a fresh exchange and queue.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use todo_test_support::{unique_name, Backends, TEST_JWT_SECRET};

/// One running system; dropping it kills every process it started.
pub struct System {
    pub edge_url: String,
    pub users_url: String,
    pub tasks_url: String,
    pub notify_url: String,
    pub policy_dir: tempfile::TempDir,
    processes: Vec<(String, Child)>,
}

/// Rate limits generous enough for test traffic from one address; tests of the limits
/// themselves write their own.
pub const TEST_LIMITS: &str = r#"
[limits.register-per-ip]
requests = 10000
window_seconds = 60
key = "client_ip"

[limits.login-per-ip]
requests = 10000
window_seconds = 60
key = "client_ip"

[limits.per-user]
requests = 10000
window_seconds = 60
key = "subject"
"#;

impl System {
    /// Starts everything and waits until the edge is ready.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Like [`System::start`], letting `edit_policies` change the policy directory first.
    pub async fn start_with(edit_policies: impl FnOnce(&Path)) -> Self {
        let backends = Backends::from_env();
        let bin = binaries_dir();
        let exchange = unique_name("e2e.task.events");
        let queue = unique_name("e2e.notify");
        let [edge, users, tasks, notify] = [free_port(), free_port(), free_port(), free_port()];
        let common = [
            ("JWT_SECRET", TEST_JWT_SECRET.to_owned()),
            ("SHUTDOWN_GRACE_SECONDS", "2".to_owned()),
            ("RUST_LOG", std::env::var("E2E_LOG").unwrap_or_else(|_| "warn".to_owned())),
        ];
        let services = [
            ("svc-users", users, vec![("MONGODB_DB", unique_name("e2e_users")), ("BCRYPT_COST", "4".into())]),
            (
                "svc-tasks",
                tasks,
                vec![
                    ("MONGODB_DB", unique_name("e2e_tasks")),
                    ("REDIS_URL", backends.redis_url.clone()),
                    ("REDIS_KEY_PREFIX", format!("{}:", unique_name("e2e"))),
                    ("AMQP_URL", backends.amqp_url.clone()),
                    ("AMQP_EXCHANGE", exchange.clone()),
                ],
            ),
            (
                "svc-notify",
                notify,
                vec![
                    ("MONGODB_DB", unique_name("e2e_notify")),
                    ("AMQP_URL", backends.amqp_url.clone()),
                    ("AMQP_EXCHANGE", exchange.clone()),
                    ("AMQP_QUEUE", queue.clone()),
                ],
            ),
        ];

        let policy_dir = tempfile::tempdir().expect("temp dir");
        write_policies(policy_dir.path(), users, tasks, notify);
        edit_policies(policy_dir.path());

        let mut processes = Vec::new();
        for (name, port, env) in services {
            let mut command = Command::new(bin.join(name));
            command
                .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
                .env("MONGODB_URI", &backends.mongodb_uri)
                .envs(common.iter().map(|(k, v)| (*k, v.as_str())))
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
            processes.push((name.to_owned(), spawn(command)));
        }
        let mut command = Command::new(bin.join("edge"));
        command
            .env("LISTEN_ADDR", format!("127.0.0.1:{edge}"))
            .env("POLICY_DIR", policy_dir.path())
            .envs(common.iter().map(|(k, v)| (*k, v.as_str())));
        processes.push(("edge".to_owned(), spawn(command)));

        let system = Self {
            edge_url: format!("http://127.0.0.1:{edge}"),
            users_url: format!("http://127.0.0.1:{users}"),
            tasks_url: format!("http://127.0.0.1:{tasks}"),
            notify_url: format!("http://127.0.0.1:{notify}"),
            policy_dir,
            processes,
        };
        for url in [&system.users_url, &system.tasks_url, &system.notify_url, &system.edge_url] {
            wait_ready(url).await;
        }
        system
    }

    /// Sends SIGKILL to one process by name ("svc-notify", …) and returns its exit.
    pub fn kill(&mut self, name: &str) {
        if let Some((_, child)) = self.processes.iter_mut().find(|(n, _)| n == name) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for System {
    fn drop(&mut self) {
        for (_, child) in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The shipped routes and CORS policy, generous limits, and upstreams on our ports.
fn write_policies(dir: &Path, users: u16, tasks: u16, notify: u16) {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    for file in ["routes.toml", "cors.toml"] {
        std::fs::copy(shipped.join(file), dir.join(file)).expect("shipped policy file copies");
    }
    std::fs::write(dir.join("limits.toml"), TEST_LIMITS).expect("limits written");
    let upstreams = format!(
        "[upstreams.users]\naddresses = [\"127.0.0.1:{users}\"]\n\n\
         [upstreams.tasks]\naddresses = [\"127.0.0.1:{tasks}\"]\n\n\
         [upstreams.notify]\naddresses = [\"127.0.0.1:{notify}\"]\n"
    );
    std::fs::write(dir.join("upstreams.toml"), upstreams).expect("upstreams written");
}

/// `target/<profile>`, where cargo put the workspace's binaries next to this test.
fn binaries_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps").to_path_buf();
    for name in ["edge", "svc-users", "svc-tasks", "svc-notify"] {
        assert!(
            dir.join(name).exists(),
            "{name} is not built in {dir:?}: run `cargo test --workspace` (or cargo build)"
        );
    }
    dir
}

fn spawn(mut command: Command) -> Child {
    let verbose = std::env::var_os("E2E_LOG").is_some();
    command.stdin(Stdio::null()).stdout(if verbose { Stdio::inherit() } else { Stdio::null() });
    command.spawn().expect("process starts")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

async fn wait_ready(base: &str) {
    let client = todo_test_support::http_client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = client.get(format!("{base}/readyz")).send().await {
            if response.status() == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{base} not ready within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
