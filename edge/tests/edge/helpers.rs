//! Test harness: small stub upstreams (hyper on port 0, echoing what they received), a
//! temporary policy directory, and the real `edge` binary started on a free port.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

pub use todo_test_support::{eventually, http_client, token_for, TEST_JWT_SECRET};

/// A stub upstream. Paths ending in `/slow` answer after 2 s, `/wait` after 50 ms,
/// `/broken` drop the connection without an answer; `/healthz` is not counted.
pub struct Stub {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    server: JoinHandle<()>,
}

impl Stub {
    pub async fn start(name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("stub binds");
        let addr = listener.local_addr().expect("stub address");
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        let server = tokio::spawn(async move {
            // Connections live in this set: aborting the server task closes them all,
            // like a process that died.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                while connections.try_join_next().is_some() {}
                let counter = Arc::clone(&counter);
                connections.spawn(async move {
                    let service = service_fn(move |req| answer(name, addr, Arc::clone(&counter), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, hits, server }
    }

    /// Requests received, health checks excluded.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops listening and closes every open connection.
    pub fn kill(&self) {
        self.server.abort();
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[derive(Debug)]
struct Broken;
impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("broken on purpose")
    }
}
impl std::error::Error for Broken {}

async fn answer(
    name: &'static str,
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Broken> {
    let path = req.uri().path().to_owned();
    if path == "/healthz" {
        return Ok(Response::new(Full::new(Bytes::from_static(br#"{"status":"alive"}"#))));
    }
    hits.fetch_add(1, Ordering::SeqCst);
    if path.ends_with("/broken") {
        return Err(Broken);
    }
    if path.ends_with("/slow") {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    if path.ends_with("/wait") {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let method = req.method().to_string();
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body_bytes = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
    let body = json!({"upstream": name, "addr": addr.to_string(), "method": method, "path": path,
                      "headers": headers, "bodyBytes": body_bytes});
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    let headers = response.headers_mut();
    headers.insert("content-type", "application/json".parse().expect("static"));
    headers.insert("server", "stub-hyper/1.0".parse().expect("static"));
    headers.insert("x-powered-by", "Express".parse().expect("static"));
    Ok(response)
}

/// A policy directory removed when dropped.
pub struct PolicyDir {
    pub path: PathBuf,
}

impl PolicyDir {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!("edge-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).expect("temp dir");
        Self { path }
    }

    /// Writes atomically (temp file + rename), as editors and config tools do.
    pub fn write(&self, name: &str, text: &str) {
        write_atomically(&self.path, name, text);
    }
}

pub fn write_atomically(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write policy");
    std::fs::rename(&tmp, dir.join(name)).expect("rename policy");
}

impl Drop for PolicyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

pub const LOGIN_LIMIT: u32 = 3;
pub const USER_LIMIT: u32 = 3;
pub const ORIGIN: &str = "https://app.example";

/// The tests' upstreams, at the stubs' addresses.
pub fn upstreams_toml(users: &[SocketAddr], tasks: &[SocketAddr]) -> String {
    let list = |addrs: &[SocketAddr]| addrs.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ");
    include_str!("policies/upstreams.toml").replace("{users}", &list(users)).replace("{tasks}", &list(tasks))
}

pub const ROUTES: &str = include_str!("policies/routes.toml");

/// A public route the reload tests add and remove.
pub const PING_ROUTE: &str = r#"
[[routes]]
name = "ping"
path = "/public/ping"
methods = ["GET"]
upstream = "users"
auth = false
"#;

pub fn limits_toml() -> String {
    format!(
        r#"
# Long windows: a test never straddles a window boundary.
[limits.login-per-ip]
requests = {LOGIN_LIMIT}
window_seconds = 86400
key = "client_ip"

[limits.per-user]
requests = {USER_LIMIT}
window_seconds = 86400
key = "subject"
"#
    )
}

pub fn cors_toml() -> String {
    format!("[cors]\nallowed_origins = [\"{ORIGIN}\"]\nallowed_methods = [\"GET\", \"POST\", \"PATCH\", \"DELETE\"]\n")
}

/// Writes the standard policy set into `dir`.
pub fn write_policy(dir: &Path, users: &[SocketAddr], tasks: &[SocketAddr]) {
    write_atomically(dir, "upstreams.toml", &upstreams_toml(users, tasks));
    write_atomically(dir, "routes.toml", ROUTES);
    write_atomically(dir, "limits.toml", &limits_toml());
    write_atomically(dir, "cors.toml", &cors_toml());
}

/// A certificate authority made for one test: the edge serves certificates it signs, and
/// the test's clients trust it.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    dir: PolicyDir,
}

/// A certificate and key on disk, where `EDGE_TLS_CERT` and `EDGE_TLS_KEY` point.
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    ca_pem: String,
}

/// A leaf certificate for `127.0.0.1` and `localhost`: its PEM, its DER (what a client
/// sees in the handshake) and its key's PEM.
pub struct Issued {
    pub cert_pem: String,
    pub der: Vec<u8>,
    pub key_pem: String,
}

impl TestCa {
    pub fn new() -> Self {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "todo-system test CA");
        let cert = params.self_signed(&key).expect("CA certificate");
        Self { cert, key, dir: PolicyDir::new() }
    }

    /// A new leaf certificate and key named `name` (its common name).
    pub fn issue(&self, name: &str) -> Issued {
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("leaf params");
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("leaf certificate");
        Issued { cert_pem: cert.pem(), der: cert.der().to_vec(), key_pem: key.serialize_pem() }
    }

    /// Writes `issued` as `tls.crt` and `tls.key` in a directory of the CA's.
    pub fn files(&self, issued: &Issued) -> TlsFiles {
        let files = self.files_at(&self.dir.path.join("tls.crt"), &self.dir.path.join("tls.key"));
        std::fs::write(&files.cert, &issued.cert_pem).expect("certificate written");
        std::fs::write(&files.key, &issued.key_pem).expect("key written");
        files
    }

    /// Files at these paths (written, or linked, by the test).
    pub fn files_at(&self, cert: &Path, key: &Path) -> TlsFiles {
        TlsFiles { cert: cert.to_owned(), key: key.to_owned(), ca_pem: self.cert.pem() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir.path
    }
}

impl TlsFiles {
    /// A client that trusts the test CA (and nothing else), reports the certificate it
    /// was shown, and opens a connection per request.
    pub fn client(&self, builder: reqwest::ClientBuilder) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).expect("CA certificate");
        builder
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .tls_info(true)
            .timeout(Duration::from_secs(15))
            .pool_max_idle_per_host(0)
            .build()
            .expect("TLS client builds")
    }
}

/// The certificate (DER) a response's connection was shown.
pub fn peer_certificate(response: &reqwest::Response) -> Option<Vec<u8>> {
    response.extensions().get::<reqwest::tls::TlsInfo>()?.peer_certificate().map(<[u8]>::to_vec)
}

/// The real edge binary, killed when dropped.
pub struct Edge {
    /// The public listener: `http://127.0.0.1:port`, or `https://` when started with TLS.
    pub base: String,
    /// The admin listener (`EDGE_ADMIN_ADDR`): `http://127.0.0.1:port`.
    pub admin: String,
    child: Child,
    client: reqwest::Client,
}

/// How to start an edge beyond the policy and the environment.
#[derive(Default)]
pub struct Launch<'a> {
    /// Wait until this admin path answers 200 (the public `/healthz` is always awaited).
    pub ready_path: Option<&'a str>,
    /// Write stdout and stderr there.
    pub log: Option<&'a Path>,
    /// Serve TLS with this certificate, and talk to the edge through a client trusting it.
    pub tls: Option<&'a TlsFiles>,
}

/// Two free addresses, different from each other (both are bound while they are read).
fn free_addrs() -> (String, String) {
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    let (first, second) = (bind(), bind());
    let addr = |l: &std::net::TcpListener| l.local_addr().expect("bound address").to_string();
    (addr(&first), addr(&second))
}

impl Edge {
    pub async fn start(policy_dir: &Path, extra_env: &[(&str, &str)]) -> Self {
        Self::launch(policy_dir, extra_env, Launch::default()).await
    }

    /// Starts the edge and waits until the admin listener's `ready_path` answers 200.
    pub async fn start_with(policy_dir: &Path, extra_env: &[(&str, &str)], ready_path: &str) -> Self {
        Self::launch(policy_dir, extra_env, Launch { ready_path: Some(ready_path), ..Launch::default() }).await
    }

    /// Starts the edge with its stdout and stderr written to `log`, and waits until ready.
    pub async fn start_logging(policy_dir: &Path, extra_env: &[(&str, &str)], log: &Path) -> Self {
        Self::launch(policy_dir, extra_env, Launch { ready_path: Some("/readyz"), log: Some(log), ..Launch::default() })
            .await
    }

    pub async fn launch(policy_dir: &Path, extra_env: &[(&str, &str)], launch: Launch<'_>) -> Self {
        let (addr, admin_addr) = free_addrs();
        let mut command = Command::new(env!("CARGO_BIN_EXE_edge"));
        command
            .env_clear()
            .env("LISTEN_ADDR", &addr)
            .env("EDGE_ADMIN_ADDR", &admin_addr)
            .env("POLICY_DIR", policy_dir)
            .env("JWT_SECRET", TEST_JWT_SECRET)
            .env("EDGE_THREADS", "1")
            .env("SHUTDOWN_GRACE_SECONDS", "0")
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()));
        let (scheme, client) = match launch.tls {
            Some(tls) => {
                command.env("EDGE_TLS_CERT", &tls.cert).env("EDGE_TLS_KEY", &tls.key);
                ("https", tls.client(reqwest::Client::builder()))
            }
            None => ("http", http_client()),
        };
        for (key, value) in extra_env {
            command.env(key, value);
        }
        if let Some(log) = launch.log {
            let file = std::fs::File::create(log).expect("log file");
            command.stdout(file.try_clone().expect("log file")).stderr(file);
        } else if std::env::var_os("TEST_LOG").is_none() {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
        let child = command.spawn().expect("edge binary starts");
        let mut edge =
            Self { base: format!("{scheme}://{addr}"), admin: format!("http://{admin_addr}"), child, client };
        let mut waits = vec![(edge.client.clone(), edge.url("/healthz"))];
        if let Some(path) = launch.ready_path {
            waits.push((http_client(), edge.admin_url(path)));
        }
        for (client, url) in waits {
            if !edge.answers_200(&client, &url).await {
                let _ = edge.child.kill();
                panic!("edge did not answer 200 on {url} within 10 s");
            }
        }
        edge
    }

    async fn answers_200(&mut self, client: &reqwest::Client, url: &str) -> bool {
        for _ in 0..200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("edge exited early with {status}");
            }
            if let Ok(response) = client.get(url).timeout(Duration::from_secs(1)).send().await {
                if response.status() == 200 {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("{}{path}", self.admin)
    }

    /// A GET on the admin listener.
    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        http_client().get(self.admin_url(path)).send().await.expect("admin listener answers")
    }

    /// The `/readyz` body.
    pub async fn readiness(&self) -> Value {
        self.admin_get("/readyz").await.json().await.expect("readiness body")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("edge answers")
    }

    pub async fn get_as(&self, path: &str, subject: &str) -> reqwest::Response {
        self.client.get(self.url(path)).bearer_auth(token_for(subject)).send().await.expect("edge answers")
    }

    pub async fn metrics(&self) -> String {
        self.admin_get("/metrics").await.text().await.expect("metrics text")
    }

    /// The value of one metric line (`name{labels}`), if present.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self.metrics().await;
        text.lines().find_map(|line| line.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The standard setup: one users stub, one tasks stub, the standard policy, a started edge.
pub struct World {
    pub users: Stub,
    pub tasks: Stub,
    pub policy: PolicyDir,
    pub edge: Edge,
}

impl World {
    pub async fn start() -> Self {
        Self::start_with_env(&[]).await
    }

    pub async fn start_with_env(env: &[(&str, &str)]) -> Self {
        Self::launch(env, None).await
    }

    /// The standard setup with the edge serving TLS from `tls`.
    pub async fn start_tls(env: &[(&str, &str)], tls: &TlsFiles) -> Self {
        Self::launch(env, Some(tls)).await
    }

    async fn launch(env: &[(&str, &str)], tls: Option<&TlsFiles>) -> Self {
        todo_common::telemetry::init_for_tests();
        let users = Stub::start("users").await;
        let tasks = Stub::start("tasks").await;
        let policy = PolicyDir::new();
        write_policy(&policy.path, &[users.addr], &[tasks.addr]);
        let launch = Launch { ready_path: Some("/readyz"), tls, ..Launch::default() };
        let edge = Edge::launch(&policy.path, env, launch).await;
        Self { users, tasks, policy, edge }
    }
}

/// The helmet set every response must carry.
pub const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'self';base-uri 'self';font-src 'self' https: data:;form-action 'self';frame-ancestors 'self';img-src 'self' data:;object-src 'none';script-src 'self';script-src-attr 'none';style-src 'self' https: 'unsafe-inline';upgrade-insecure-requests",
    ),
    ("strict-transport-security", "max-age=31536000; includeSubDomains"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "SAMEORIGIN"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    ("x-dns-prefetch-control", "off"),
    ("x-permitted-cross-domain-policies", "none"),
    ("origin-agent-cluster", "?1"),
    ("x-download-options", "noopen"),
    ("x-xss-protection", "0"),
];

/// Every security header, no software-naming header, a request id, and a body length.
pub fn assert_edge_headers(response: &reqwest::Response, what: &str) {
    let headers = response.headers();
    for (name, value) in SECURITY_HEADERS {
        assert_eq!(headers.get(*name).and_then(|v| v.to_str().ok()), Some(*value), "{what}: header {name}");
    }
    for name in ["server", "x-powered-by"] {
        assert!(headers.get(name).is_none(), "{what}: {name} must not be sent");
    }
    assert!(headers.get("x-request-id").is_some(), "{what}: x-request-id");
    if response.status() != 204 {
        assert!(
            headers.get("content-length").is_some() || headers.get("transfer-encoding").is_some(),
            "{what}: a body length"
        );
    }
}

pub use todo_test_support::assert_problem as problem;

pub fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Sends raw bytes (for requests an HTTP client would normalize) and reads the answer
/// until the connection closes.
pub async fn raw_request(edge: &Edge, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(edge.base.trim_start_matches("http://")).await.expect("connects");
    stream.write_all(request.as_bytes()).await.expect("request sent");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}
