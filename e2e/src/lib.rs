//! Starts the whole system as processes for end-to-end tests: the three services and
//! the edge, built by `cargo test --workspace`, on free ports, with a policy directory
//! of their own, a fresh database per service and a fresh exchange and queue.
//!
//! For the fault scenarios a system can also run several svc-tasks replicas behind the
//! edge, reach MongoDB and Redis through [`FaultProxy`]s that a test cuts and restores,
//! and stop (SIGTERM or SIGKILL) and restart any one of its processes by name.

pub mod proxy;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use todo_common::auth::{JwtSettings, PrivateKey, TokenIssuer, TokenKeys};
use todo_test_support::{eventually, unique_name, Backends};

pub use proxy::FaultProxy;

/// svc-users' signing key in [`System::keys`].
pub const SIGNING_KEY_FILE: &str = "signing.pem";

/// How long a restarted process gets to become ready, and a stopped one to exit.
const PROCESS_PATIENCE: Duration = Duration::from_secs(30);

/// What to start besides the defaults of [`System::start`].
#[derive(Debug, Clone)]
pub struct Options {
    /// How many svc-tasks processes the edge balances over (named `svc-tasks`,
    /// `svc-tasks-2`, …).
    pub tasks_replicas: usize,
    /// Every service reaches MongoDB through a [`FaultProxy`].
    pub proxy_mongodb: bool,
    /// svc-tasks reaches Redis through a [`FaultProxy`].
    pub proxy_redis: bool,
    /// How often the verifiers (edge, svc-tasks, svc-notify) fetch svc-users' JWK Set.
    pub jwks_refresh_seconds: u64,
    /// The broker the services use (`AMQP_URL`, several nodes comma-separated), instead
    /// of the test broker.
    pub amqp_url: Option<String>,
    /// Where every process exports its spans (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub otlp_endpoint: Option<String>,
    /// Each process's log lines (its stdout, at `RUST_LOG=info`) go to `<dir>/<name>.log`.
    pub log_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            tasks_replicas: 1,
            proxy_mongodb: false,
            proxy_redis: false,
            jwks_refresh_seconds: 60,
            amqp_url: None,
            otlp_endpoint: None,
            log_dir: None,
        }
    }
}

/// A service process to start: its name, port and own variables.
type ServiceSpec = (String, u16, Vec<(&'static str, String)>);

/// One process of the system, with what it takes to start it again.
struct Process {
    name: String,
    url: String,
    /// Where `/metrics` and `/readyz` are (the edge's admin listener, or `url`).
    ops_url: String,
    program: PathBuf,
    env: Vec<(String, String)>,
    /// Where its stdout goes, when kept.
    log: Option<PathBuf>,
    child: Option<Child>,
}

impl Process {
    fn spawn(&mut self) {
        let mut command = Command::new(&self.program);
        command.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        self.child = Some(spawn(command, self.log.as_deref()));
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One running system; dropping it kills every process it started.
pub struct System {
    pub edge_url: String,
    pub users_url: String,
    /// The first svc-tasks replica.
    pub tasks_url: String,
    /// Every svc-tasks replica, in order of their names.
    pub tasks_urls: Vec<String>,
    pub notify_url: String,
    pub policy_dir: tempfile::TempDir,
    /// svc-notify's queue, so tests can ask the broker what is still in it.
    pub notify_queue: String,
    /// The `AMQP_URL` the services were given.
    pub amqp_url: String,
    /// Between the services and MongoDB, when [`Options::proxy_mongodb`].
    pub mongodb_proxy: Option<FaultProxy>,
    /// Between svc-tasks and Redis, when [`Options::proxy_redis`].
    pub redis_proxy: Option<FaultProxy>,
    /// svc-users' Ed25519 signing key (`signing.pem`) and whatever keys a test adds.
    pub keys: tempfile::TempDir,
    /// The services' topic exchange, removed with the queues on drop.
    exchange: String,
    processes: Vec<Process>,
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
        Self::start_custom(Options::default(), edit_policies).await
    }

    /// Starts the system described by `options`.
    pub async fn start_with_options(options: Options) -> Self {
        Self::start_custom(options, |_| {}).await
    }

    async fn start_custom(options: Options, edit_policies: impl FnOnce(&Path)) -> Self {
        let backends = Backends::from_env();
        let bin = binaries_dir();
        let exchange = unique_name("e2e.task.events");
        let queue = unique_name("e2e.notify");

        let mongodb_proxy = match options.proxy_mongodb {
            true => Some(FaultProxy::start(host_and_port(&backends.mongodb_uri).0).await),
            false => None,
        };
        // Through a proxy the driver must not discover the replica set's real address
        // (it would connect around the proxy), so it talks to the one server directly.
        let mongodb_uri = match &mongodb_proxy {
            Some(proxy) => format!("mongodb://{}/?directConnection=true", proxy.addr()),
            None => backends.mongodb_uri.clone(),
        };
        let redis_proxy = match options.proxy_redis {
            true => Some(FaultProxy::start(host_and_port(&backends.redis_url).0).await),
            false => None,
        };
        let redis_url = match &redis_proxy {
            Some(proxy) => format!("redis://{}{}", proxy.addr(), host_and_port(&backends.redis_url).1),
            None => backends.redis_url.clone(),
        };

        // EdDSA, as deployed: svc-users signs, the others verify with its JWK Set.
        let keys = tempfile::tempdir().expect("temp dir");
        let signing_key = keys.path().join(SIGNING_KEY_FILE);
        std::fs::write(&signing_key, PrivateKey::generate().to_pem()).expect("signing key written");
        // Released just before the processes start.
        let mut ports = FreePorts::default();
        let users_port = ports.take();
        let verifier_env = [
            ("JWT_JWKS_URL".to_owned(), format!("http://127.0.0.1:{users_port}/.well-known/jwks.json")),
            ("JWT_JWKS_REFRESH_SECONDS".to_owned(), options.jwks_refresh_seconds.to_string()),
        ];
        let quiet = if options.log_dir.is_some() { "info" } else { "warn" };
        let mut common = vec![
            ("SHUTDOWN_GRACE_SECONDS", "2".to_owned()),
            ("RUST_LOG", std::env::var("E2E_LOG").unwrap_or_else(|_| quiet.to_owned())),
        ];
        if let Some(endpoint) = &options.otlp_endpoint {
            // Batches leave every 100 ms instead of 5 s, so tests see spans soon.
            common
                .extend([("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()), ("OTEL_BSP_SCHEDULE_DELAY", "100".into())]);
        }
        let amqp_url = options.amqp_url.clone().unwrap_or_else(|| backends.amqp_url.clone());
        let tasks_db = unique_name("e2e_tasks");
        let redis_prefix = format!("{}:", unique_name("e2e"));
        let mut services: Vec<ServiceSpec> = Vec::new();
        services.push((
            "svc-users".into(),
            users_port,
            vec![
                ("MONGODB_DB", unique_name("e2e_users")),
                ("REDIS_URL", redis_url.clone()),
                ("REDIS_KEY_PREFIX", format!("{}:", unique_name("e2e_users"))),
                ("BCRYPT_COST", "4".into()),
                ("JWT_SIGNING_KEY", signing_key.display().to_string()),
            ],
        ));
        for replica in 1..=options.tasks_replicas.max(1) {
            let name = if replica == 1 { "svc-tasks".to_owned() } else { format!("svc-tasks-{replica}") };
            services.push((
                name,
                ports.take(),
                vec![
                    ("MONGODB_DB", tasks_db.clone()),
                    ("REDIS_URL", redis_url.clone()),
                    ("REDIS_KEY_PREFIX", redis_prefix.clone()),
                    ("AMQP_URL", amqp_url.clone()),
                    ("AMQP_EXCHANGE", exchange.clone()),
                ],
            ));
        }
        services.push((
            "svc-notify".into(),
            ports.take(),
            vec![
                ("MONGODB_DB", unique_name("e2e_notify")),
                ("AMQP_URL", amqp_url.clone()),
                ("AMQP_EXCHANGE", exchange.clone()),
                ("AMQP_QUEUE", queue.clone()),
            ],
        ));
        let edge_port = ports.take();
        let edge_admin_port = ports.take();

        let ports_of = |prefix: &str| -> Vec<u16> {
            services.iter().filter(|(name, _, _)| name.starts_with(prefix)).map(|(_, port, _)| *port).collect()
        };
        let policy_dir = tempfile::tempdir().expect("temp dir");
        write_policies(policy_dir.path(), &ports_of("svc-users"), &ports_of("svc-tasks"), &ports_of("svc-notify"));
        edit_policies(policy_dir.path());

        let common_env = || common.iter().map(|(k, v)| (k.to_string(), v.clone()));
        let log_of = |name: &str| options.log_dir.as_ref().map(|dir| dir.join(format!("{name}.log")));
        let mut processes = Vec::new();
        for (name, port, env) in &services {
            let program = bin.join(if name.starts_with("svc-tasks") { "svc-tasks" } else { name.as_str() });
            let env =
                [("LISTEN_ADDR".to_owned(), format!("127.0.0.1:{port}")), ("MONGODB_URI".into(), mongodb_uri.clone())]
                    .into_iter()
                    .chain(common_env())
                    .chain(verifier_env.iter().filter(|_| name != "svc-users").cloned())
                    .chain(env.iter().map(|(k, v)| (k.to_string(), v.clone())))
                    .collect();
            let url = format!("http://127.0.0.1:{port}");
            let log = log_of(name);
            processes.push(Process { name: name.clone(), ops_url: url.clone(), url, program, env, log, child: None });
        }
        let edge_env = [
            ("LISTEN_ADDR".to_owned(), format!("127.0.0.1:{edge_port}")),
            ("EDGE_ADMIN_ADDR".to_owned(), format!("127.0.0.1:{edge_admin_port}")),
            ("POLICY_DIR".into(), policy_dir.path().display().to_string()),
        ]
        .into_iter()
        .chain(common_env())
        .chain(verifier_env.iter().cloned())
        .collect();
        processes.push(Process {
            log: log_of("edge"),
            name: "edge".into(),
            url: format!("http://127.0.0.1:{edge_port}"),
            ops_url: format!("http://127.0.0.1:{edge_admin_port}"),
            program: bin.join("edge"),
            env: edge_env,
            child: None,
        });
        drop(ports);
        for process in &mut processes {
            process.spawn();
        }

        let url_of = |name: &str| processes.iter().find(|p| p.name == name).map(|p| p.url.clone()).unwrap_or_default();
        let system = Self {
            edge_url: url_of("edge"),
            users_url: url_of("svc-users"),
            tasks_url: url_of("svc-tasks"),
            tasks_urls: processes.iter().filter(|p| p.name.starts_with("svc-tasks")).map(|p| p.url.clone()).collect(),
            notify_url: url_of("svc-notify"),
            policy_dir,
            notify_queue: queue,
            amqp_url,
            mongodb_proxy,
            redis_proxy,
            keys,
            exchange: exchange.clone(),
            processes,
        };
        // The edge last: it is ready once it has a policy, but its upstreams should be up.
        for process in system.processes.iter().filter(|p| p.name != "edge") {
            wait_ready(&process.ops_url).await;
        }
        wait_ready(&system.ops_url("edge")).await;
        system
    }

    /// The names of the processes, in start order (the edge last).
    pub fn process_names(&self) -> Vec<String> {
        self.processes.iter().map(|p| p.name.clone()).collect()
    }

    fn process(&mut self, name: &str) -> &mut Process {
        self.processes.iter_mut().find(|p| p.name == name).unwrap_or_else(|| panic!("no process named {name}"))
    }

    /// The base URL of one process by name.
    pub fn url(&self, name: &str) -> String {
        self.processes.iter().find(|p| p.name == name).map(|p| p.url.clone()).unwrap_or_else(|| panic!("no {name}"))
    }

    /// Where one process serves `/metrics` and `/readyz`: the edge's admin listener, a
    /// service's own port.
    pub fn ops_url(&self, name: &str) -> String {
        self.processes.iter().find(|p| p.name == name).map(|p| p.ops_url.clone()).unwrap_or_else(|| panic!("no {name}"))
    }

    /// The process id of a running process.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.processes.iter().find(|p| p.name == name)?.child.as_ref().map(Child::id)
    }

    /// Runs the process's binary with `--probe` in the process's environment (what a
    /// container health check does) and returns whether it reported healthy.
    pub fn probe(&self, name: &str) -> bool {
        let process = self.processes.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("no {name}"));
        let output = Command::new(&process.program)
            .arg("--probe")
            .env_clear()
            .envs(process.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("the probe runs");
        output.status.success()
    }

    /// Sends SIGKILL to one process by name ("svc-notify", …) and reaps it.
    pub fn kill(&mut self, name: &str) {
        self.process(name).kill();
    }

    /// Sends SIGTERM to one process and returns at once, so the caller can watch the drain.
    pub fn send_sigterm(&mut self, name: &str) {
        let pid = self.pid(name).unwrap_or_else(|| panic!("{name} is not running"));
        let pid = Pid::from_raw(i32::try_from(pid).expect("pid fits in i32"));
        signal::kill(pid, Signal::SIGTERM).expect("SIGTERM delivered");
    }

    /// Waits until a signalled process has exited and returns how.
    pub async fn wait_exit(&mut self, name: &str) -> ExitStatus {
        let process = self.process(name);
        let child = process.child.as_mut().unwrap_or_else(|| panic!("{name} is not running"));
        let status = eventually(&format!("{name} to exit"), PROCESS_PATIENCE, || {
            let exited = child.try_wait().ok().flatten();
            async move { exited }
        })
        .await;
        process.child = None;
        status
    }

    /// SIGTERM, then waits for the exit.
    pub async fn terminate(&mut self, name: &str) -> ExitStatus {
        self.send_sigterm(name);
        self.wait_exit(name).await
    }

    /// A valid access token for `subject`, signed like svc-users signs now (its
    /// `JWT_SIGNING_KEY` and `JWT_KID`), for requests that need no real user.
    pub fn token_for(&self, subject: &str) -> String {
        let users = self.processes.iter().find(|p| p.name == "svc-users").expect("svc-users");
        let var = |key: &str| users.env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let path = var("JWT_SIGNING_KEY").expect("svc-users signs with a key file");
        let key = PrivateKey::read(Path::new(&path)).expect("the signing key loads");
        let kid = var("JWT_KID").unwrap_or_else(|| "primary".into());
        let settings = JwtSettings::with_keys(TokenKeys::Signing { kid, key, published: Vec::new() });
        let issuer = TokenIssuer::new(&settings, Duration::from_secs(3600)).expect("an issuer");
        issuer.issue(subject).expect("token signs")
    }

    /// Sets (`Some`) or removes (`None`) one variable of a process, for its next start.
    pub fn set_env(&mut self, name: &str, key: &str, value: Option<&str>) {
        let process = self.process(name);
        process.env.retain(|(k, _)| k != key);
        if let Some(value) = value {
            process.env.push((key.to_owned(), value.to_owned()));
        }
    }

    /// Starts a process again with the same port and environment (killing it first if it
    /// still runs) and waits until it is ready.
    pub async fn restart(&mut self, name: &str) {
        let process = self.process(name);
        process.kill();
        process.spawn();
        let url = process.ops_url.clone();
        wait_ready(&url).await;
    }
}

impl Drop for System {
    /// Stops the processes, then removes the system's exchange and queues from the broker.
    fn drop(&mut self) {
        for process in &mut self.processes {
            process.kill();
        }
        // A cluster's URL lists every node; any node can delete.
        let amqp_url = self.amqp_url.split(',').next().unwrap_or_default().to_owned();
        let (exchange, queue) = (self.exchange.clone(), self.notify_queue.clone());
        todo_test_support::clean_up_blocking(async move {
            let properties = lapin::ConnectionProperties::default();
            if let Ok(connection) = lapin::Connection::connect(&amqp_url, properties).await {
                if let Ok(channel) = connection.create_channel().await {
                    todo_test_support::delete_notify_topology(&channel, &exchange, &queue).await;
                }
                let _ = connection.close(200, "test done").await;
            }
        });
    }
}

/// The shipped routes and CORS policy, generous limits, and upstreams on our ports.
fn write_policies(dir: &Path, users: &[u16], tasks: &[u16], notify: &[u16]) {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    for file in ["routes.toml", "cors.toml"] {
        std::fs::copy(shipped.join(file), dir.join(file)).expect("shipped policy file copies");
    }
    std::fs::write(dir.join("limits.toml"), TEST_LIMITS).expect("limits written");
    let addresses =
        |ports: &[u16]| ports.iter().map(|port| format!("\"127.0.0.1:{port}\"")).collect::<Vec<_>>().join(", ");
    let upstreams = format!(
        "[upstreams.users]\naddresses = [{}]\n\n\
         [upstreams.tasks]\naddresses = [{}]\n\n\
         [upstreams.notify]\naddresses = [{}]\n",
        addresses(users),
        addresses(tasks),
        addresses(notify)
    );
    std::fs::write(dir.join("upstreams.toml"), upstreams).expect("upstreams written");
}

/// `host:port` of a `scheme://[user@]host:port[/rest]` URL, and the `/rest`.
pub fn host_and_port(url: &str) -> (String, String) {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (authority, rest) = match after_scheme.find(['/', '?']) {
        Some(at) => after_scheme.split_at(at),
        None => (after_scheme, ""),
    };
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    // A replica-set URI may list several hosts; the first is the one the tests use.
    let host = host.split(',').next().unwrap_or(host);
    (host.to_owned(), rest.to_owned())
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

fn spawn(mut command: Command, log: Option<&Path>) -> Child {
    let verbose = std::env::var_os("E2E_LOG").is_some();
    let stdout = match log {
        // Appended: a restarted process adds to what it wrote before.
        Some(path) => {
            Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(path).expect("the log file opens"))
        }
        None if verbose => Stdio::inherit(),
        None => Stdio::null(),
    };
    command.stdin(Stdio::null()).stdout(stdout);
    command.spawn().expect("process starts")
}

/// Free ports that differ from one another: each stays bound until the set is dropped, so
/// the kernel never hands out the same one twice.
#[derive(Default)]
pub struct FreePorts(Vec<TcpListener>);

impl FreePorts {
    pub fn take(&mut self) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("a bound address").port();
        self.0.push(listener);
        port
    }
}

async fn wait_ready(base: &str) {
    let client = todo_test_support::http_client();
    let deadline = Instant::now() + PROCESS_PATIENCE;
    loop {
        if let Ok(response) = client.get(format!("{base}/readyz")).send().await {
            if response.status() == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{base} not ready within {PROCESS_PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::host_and_port;

    #[test]
    fn backend_addresses_are_found_in_urls() {
        assert_eq!(host_and_port("mongodb://127.0.0.1:27017"), ("127.0.0.1:27017".into(), "".into()));
        assert_eq!(host_and_port("mongodb://u:p@h1:1,h2:2/?rs=x"), ("h1:1".into(), "/?rs=x".into()));
        assert_eq!(host_and_port("redis://127.0.0.1:6379/2"), ("127.0.0.1:6379".into(), "/2".into()));
    }
}
