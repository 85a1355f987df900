//! TLS and HTTP/2 on the public listener, with real certificates (a test CA), real rustls
//! clients and reqwest's HTTP/2 client: versions and ALPN, every edge feature the same
//! over HTTP/2 as over HTTP/1.1, certificate rotation under load in both file layouts,
//! and the start-up checks.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, Version};
use serde_json::Value;

use crate::helpers::*;

/// A client that speaks HTTP/2 only (ALPN `h2`), or HTTP/1.1 only.
fn client(tls: &TlsFiles, version: Version) -> reqwest::Client {
    let builder = reqwest::Client::builder();
    let builder = if version == Version::HTTP_2 { builder.http2_prior_knowledge() } else { builder.http1_only() };
    tls.client(builder)
}

#[tokio::test]
async fn the_public_listener_speaks_tls_1_2_and_1_3_only_and_offers_h2_and_http_1_1() {
    let ca = TestCa::new();
    let issued = ca.issue("edge-a");
    let tls = ca.files(&issued);
    let world = World::start_tls(&[], &tls).await;
    let url = world.edge.url("/healthz");
    assert!(url.starts_with("https://"));

    // Offered both, the client gets HTTP/2; offered one, it gets that one.
    let both = tls.client(reqwest::Client::builder()).get(&url).send().await.unwrap();
    assert_eq!(both.version(), Version::HTTP_2);
    assert_eq!(peer_certificate(&both), Some(issued.der.clone()), "the configured certificate is presented");
    for version in [Version::HTTP_2, Version::HTTP_11] {
        let response = client(&tls, version).get(&url).send().await.unwrap();
        assert_eq!((response.status().as_u16(), response.version()), (200, version));
    }
    for (min, max) in [
        (reqwest::tls::Version::TLS_1_2, reqwest::tls::Version::TLS_1_2),
        (reqwest::tls::Version::TLS_1_3, reqwest::tls::Version::TLS_1_3),
    ] {
        let pinned = tls.client(reqwest::Client::builder().min_tls_version(min).max_tls_version(max));
        assert_eq!(pinned.get(&url).send().await.unwrap().status(), 200, "{max:?}");
    }
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = http_client().get(url.replace("https://", "http://")).send().await;
    assert!(plain.is_err(), "plain HTTP answered on the TLS port: {plain:?}");
    // The admin listener stays plain HTTP.
    assert_eq!(world.edge.admin_get("/readyz").await.status(), 200);
}

/// What a client can tell of one answer, compared across protocols.
#[derive(Debug, PartialEq)]
struct Observed {
    status: u16,
    headers: BTreeMap<String, String>,
    /// problem+json fields, or what the upstream stub saw.
    body: Value,
}

/// Headers whose value differs on every request: compared by presence only.
const VARYING: &[&str] = &["date", "x-request-id"];
/// HTTP/1.1's connection-level headers, which HTTP/2 does not have.
const HTTP1_ONLY: &[&str] = &["connection", "keep-alive", "transfer-encoding"];

async fn observe(response: reqwest::Response, version: Version) -> Observed {
    assert_eq!(response.version(), version);
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .filter(|(name, _)| !HTTP1_ONLY.contains(&name.as_str()))
        .map(|(name, value)| {
            let value = if VARYING.contains(&name.as_str()) { "(present)" } else { value.to_str().unwrap_or("?") };
            (name.as_str().to_owned(), value.to_owned())
        })
        .collect();
    let text = response.text().await.unwrap();
    let mut body: Value = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() };
    if let Some(seen) = body.get_mut("headers").and_then(Value::as_object_mut) {
        // What the client's protocol puts there: `host` from HTTP/2's `:authority`.
        seen.remove("host");
        // A token carries its issue time.
        if let Some(token) = seen.get_mut("authorization") {
            *token = Value::from("(present)");
        }
        if let Some(id) = seen.get_mut("x-request-id").filter(|id| id.as_str().is_some_and(|s| s.len() == 32)) {
            *id = Value::from("(generated)");
        }
        // A new trace (and the edge's span) per request: `00-<32 hex>-<16 hex>-<flags>`.
        if let Some(trace) = seen.get_mut("traceparent").filter(|t| t.as_str().is_some_and(|s| s.len() == 55)) {
            *trace = Value::from("(generated)");
        }
    }
    Observed { status, headers, body }
}

/// One request of the comparison: method, path, headers, body, token subject.
struct Case {
    what: &'static str,
    method: Method,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: Option<usize>,
    subject: Option<&'static str>,
}

const fn case(what: &'static str, method: Method, path: &'static str) -> Case {
    Case { what, method, path, headers: &[], body: None, subject: None }
}

fn cases() -> Vec<Case> {
    vec![
        case("liveness", Method::GET, "/healthz"),
        case("readiness is not public", Method::GET, "/readyz"),
        case("no route", Method::GET, "/nowhere"),
        case("no token", Method::GET, "/tasks/1"),
        Case { headers: &[("authorization", "Bearer not-a-token")], ..case("bad token", Method::GET, "/tasks/1") },
        Case {
            headers: &[("x-request-id", "req-kept-1"), ("origin", ORIGIN), ("x-forwarded-for", "203.0.113.9")],
            subject: Some("alice"),
            ..case("proxied, with CORS, a kept request id and a spoofed X-Forwarded-For", Method::GET, "/tasks/1")
        },
        Case {
            headers: &[("content-type", "application/json")],
            body: Some(300),
            ..case("a body forwarded", Method::POST, "/users/register")
        },
        Case {
            headers: &[("origin", ORIGIN), ("access-control-request-method", "PATCH")],
            ..case("preflight", Method::OPTIONS, "/tasks/1")
        },
        Case {
            headers: &[("origin", "https://evil.example"), ("access-control-request-method", "PATCH")],
            ..case("preflight from an origin not allowed", Method::OPTIONS, "/tasks/1")
        },
        case("method not allowed", Method::DELETE, "/users/register"),
        Case { body: Some(4096), ..case("body over the limit", Method::POST, "/users/register") },
        Case { subject: Some("alice"), ..case("upstream fails", Method::GET, "/tasks/broken") },
        Case { subject: Some("alice"), ..case("upstream too slow", Method::GET, "/tasks/slow") },
    ]
}

async fn send(client: &reqwest::Client, base: &str, case: &Case, subject: Option<&str>) -> reqwest::Response {
    let mut request = client.request(case.method.clone(), format!("{base}{}", case.path));
    for (name, value) in case.headers {
        request = request.header(*name, *value);
    }
    if let Some(subject) = subject.or(case.subject) {
        request = request.bearer_auth(token_for(subject));
    }
    if let Some(len) = case.body {
        request = request.body(format!("\"{}\"", "x".repeat(len - 2)));
    }
    request.send().await.unwrap_or_else(|e| panic!("{}: {e}", case.what))
}

#[tokio::test]
async fn every_edge_feature_answers_the_same_over_http_2_as_over_http_1_1() {
    let ca = TestCa::new();
    let tls = ca.files(&ca.issue("edge"));
    let world = World::start_tls(&[("EDGE_MAX_BODY_BYTES", "1024")], &tls).await;
    let base = &world.edge.base;
    let (h1, h2) = (client(&tls, Version::HTTP_11), client(&tls, Version::HTTP_2));
    for case in cases() {
        let over_h1 = observe(send(&h1, base, &case, None).await, Version::HTTP_11).await;
        let over_h2 = observe(send(&h2, base, &case, None).await, Version::HTTP_2).await;
        assert_eq!(over_h2, over_h1, "{}: HTTP/2 (left) and HTTP/1.1 (right) differ", case.what);
    }

    // What the comparison stands on, checked once.
    let proxied = &cases()[5];
    let seen: Value = send(&h2, base, proxied, None).await.json().await.unwrap();
    let seen = &seen["headers"];
    assert_eq!(seen["x-forwarded-proto"], "https", "{seen}");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1", "the client's own X-Forwarded-For is not passed on: {seen}");
    assert_eq!(seen["x-request-id"], "req-kept-1");
    let refused = send(&h2, base, &cases()[4], None).await;
    assert_edge_headers(&refused, "401 over HTTP/2");
    problem(refused, 401).await;
    let preflight = send(&h2, base, &cases()[7], None).await;
    assert_eq!((preflight.status().as_u16(), header(&preflight, "access-control-allow-origin")), (204, Some(ORIGIN)));
    problem(send(&h2, base, &cases()[10], None).await, 413).await;
    problem(send(&h2, base, &cases()[11], None).await, 502).await;

    // Rate limits: each protocol's own user gets the same budget and the same answers.
    let limited = case("rate limited", Method::GET, "/tasks/limited");
    for round in 0..=USER_LIMIT {
        let over_h1 = observe(send(&h1, base, &limited, Some("limited-h1")).await, Version::HTTP_11).await;
        let over_h2 = observe(send(&h2, base, &limited, Some("limited-h2")).await, Version::HTTP_2).await;
        let expected = if round < USER_LIMIT { 200 } else { 429 };
        assert_eq!(over_h1.status, expected, "request {round}");
        assert!(over_h1.headers.contains_key("ratelimit-remaining"), "{over_h1:?}");
        assert_eq!(over_h2, over_h1, "request {round} of the limited route");
    }
}

/// How the certificate files are laid out, and so how a rotation changes them.
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// `tls.crt` and `tls.key` rewritten in place, one after the other.
    InPlace,
    /// A Kubernetes Secret volume: `tls.crt -> ..data/tls.crt`, `..data -> ..<version>`,
    /// and a rotation swaps the `..data` symlink.
    SecretVolume,
}

struct CertDir<'a> {
    ca: &'a TestCa,
    layout: Layout,
    version: usize,
}

impl<'a> CertDir<'a> {
    fn new(ca: &'a TestCa, layout: Layout, first: &Issued) -> (Self, TlsFiles) {
        let mut dir = Self { ca, layout, version: 0 };
        let files = ca.files_at(&ca.dir().join("tls.crt"), &ca.dir().join("tls.key"));
        if let Layout::SecretVolume = layout {
            for name in ["tls.crt", "tls.key"] {
                std::os::unix::fs::symlink(format!("..data/{name}"), ca.dir().join(name)).unwrap();
            }
        }
        dir.write(&first.cert_pem, &first.key_pem);
        (dir, files)
    }

    fn write(&mut self, cert: &str, key: &str) {
        let dir = self.ca.dir();
        match self.layout {
            Layout::InPlace => {
                std::fs::write(dir.join("tls.crt"), cert).unwrap();
                // A reader may see the new certificate with the old key for a moment.
                std::thread::sleep(Duration::from_millis(300));
                std::fs::write(dir.join("tls.key"), key).unwrap();
            }
            Layout::SecretVolume => {
                self.version += 1;
                let version = format!("..2026_11_30_{}", self.version);
                std::fs::create_dir(dir.join(&version)).unwrap();
                std::fs::write(dir.join(&version).join("tls.crt"), cert).unwrap();
                std::fs::write(dir.join(&version).join("tls.key"), key).unwrap();
                std::os::unix::fs::symlink(&version, dir.join("..data_tmp")).unwrap();
                std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
                if self.version > 1 {
                    std::fs::remove_dir_all(dir.join(format!("..2026_11_30_{}", self.version - 1))).unwrap();
                }
            }
        }
    }

    fn remove_key(&self) {
        let key = match self.layout {
            Layout::InPlace => self.ca.dir().join("tls.key"),
            Layout::SecretVolume => self.ca.dir().join(format!("..2026_11_30_{}/tls.key", self.version)),
        };
        std::fs::remove_file(key).unwrap();
    }
}

/// Requests sent all along a rotation, over new connections and kept-alive ones (HTTP/1.1
/// and HTTP/2); every one must be answered 200.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(tls: &TlsFiles, url: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept_alive = |b: reqwest::ClientBuilder| b.pool_max_idle_per_host(8).pool_idle_timeout(None);
        let clients = [
            client(tls, Version::HTTP_11),
            client(tls, Version::HTTP_2),
            tls.client(kept_alive(reqwest::Client::builder().http1_only())),
            tls.client(kept_alive(reqwest::Client::builder().http2_prior_knowledge())),
        ];
        let tasks = clients
            .into_iter()
            .map(|client| {
                let (stop, sent, failures, url) = (stop.clone(), sent.clone(), failures.clone(), url.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let outcome = client.get(&url).bearer_auth(token_for("alice")).send().await;
                        sent.fetch_add(1, Ordering::Relaxed);
                        match outcome {
                            Ok(response) if response.status() == 200 => {}
                            Ok(response) => failures.lock().unwrap().push(format!("status {}", response.status())),
                            Err(e) => failures.lock().unwrap().push(format!("{e:?}")),
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();
        Self { stop, sent, failures, tasks }
    }

    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.sent.load(Ordering::Relaxed), failures)
    }
}

/// The certificate a new connection is shown.
async fn presented(tls: &TlsFiles, url: &str) -> Vec<u8> {
    let response = client(tls, Version::HTTP_11).get(url).send().await.expect("new connection answered");
    peer_certificate(&response).expect("a TLS connection")
}

async fn presented_within_10_s(tls: &TlsFiles, url: &str, expected: &Issued, what: &str) -> Duration {
    let started = Instant::now();
    while presented(tls, url).await != expected.der {
        assert!(started.elapsed() < Duration::from_secs(10), "{what}: not presented within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

async fn reloads(edge: &Edge, result: &str) -> f64 {
    edge.metric(&format!("edge_tls_certificate_reloads_total{{result=\"{result}\"}}")).await.unwrap_or(-1.0)
}

async fn rotates_under_load(layout: Layout) {
    let ca = TestCa::new();
    let (a, b, c) = (ca.issue("edge-a"), ca.issue("edge-b"), ca.issue("edge-c"));
    let (mut dir, tls) = CertDir::new(&ca, layout, &a);
    let world = World::start_tls(&[], &tls).await;
    let edge = &world.edge;
    let health = edge.url("/healthz");
    assert_eq!(presented(&tls, &health).await, a.der);
    let load = Load::start(&tls, edge.url("/tasks/1"));
    tokio::time::sleep(Duration::from_millis(500)).await;

    dir.write(&b.cert_pem, &b.key_pem);
    let took = presented_within_10_s(&tls, &health, &b, "the rotated certificate").await;
    eprintln!("{layout:?}: new handshakes presented the new certificate after {took:?}");
    assert_eq!((reloads(edge, "loaded").await, reloads(edge, "refused").await), (1.0, 0.0));

    // A pair that does not load (C's certificate with B's key) is refused; B stays.
    dir.write(&c.cert_pem, &b.key_pem);
    eventually("the mismatched pair is refused and counted", Duration::from_secs(10), || async {
        (reloads(edge, "refused").await == 1.0).then_some(())
    })
    .await;
    assert_eq!(presented(&tls, &health).await, b.der, "the served certificate stays");
    // So is a key that disappears.
    dir.remove_key();
    eventually("the missing key is counted", Duration::from_secs(10), || async {
        (reloads(edge, "refused").await == 2.0).then_some(())
    })
    .await;
    assert_eq!(presented(&tls, &health).await, b.der, "the served certificate stays");
    // Fixed files are picked up again.
    dir.write(&c.cert_pem, &c.key_pem);
    presented_within_10_s(&tls, &health, &c, "the fixed pair").await;
    assert_eq!(reloads(edge, "loaded").await, 2.0);

    let (sent, failures) = load.finish().await;
    assert!(sent > 100, "only {sent} requests were sent during the rotation");
    assert!(failures.is_empty(), "{} of {sent} requests failed during the rotation: {failures:?}", failures.len());
    let ready = edge.readiness().await;
    assert_eq!(ready["status"], "ready", "{ready}");
}

#[tokio::test]
async fn a_pair_rewritten_in_place_is_served_within_10_s_without_dropping_a_request() {
    rotates_under_load(Layout::InPlace).await;
}

#[tokio::test]
async fn a_secret_volumes_symlink_swap_is_served_within_10_s_without_dropping_a_request() {
    rotates_under_load(Layout::SecretVolume).await;
}

/// Runs the edge with `env`, expecting it to refuse to start; returns its stderr.
fn refused_start(env: &[(&str, &std::ffi::OsStr)]) -> String {
    let policy = PolicyDir::new();
    write_policy(&policy.path, &["127.0.0.1:1".parse().unwrap()], &["127.0.0.1:2".parse().unwrap()]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_edge"))
        .env_clear()
        .env("POLICY_DIR", &policy.path)
        .env("JWT_SECRET", TEST_JWT_SECRET)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("EDGE_ADMIN_ADDR", "127.0.0.2:0")
        .env("RUST_LOG", "off")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the edge started with {env:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success(), "{env:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_pair_that_does_not_load_refuses_the_start_with_a_one_line_reason() {
    let ca = TestCa::new();
    let (a, b) = (ca.issue("edge-a"), ca.issue("edge-b"));
    let tls = ca.files(&a);
    let dir = ca.dir();
    std::fs::write(dir.join("b.key"), &b.key_pem).unwrap();
    std::fs::write(dir.join("empty.pem"), "").unwrap();
    let os = |p: &Path| p.as_os_str().to_owned();
    let (cert, key, other_key) = (os(&tls.cert), os(&tls.key), os(&dir.join("b.key")));
    let cases: [(Vec<(&str, std::ffi::OsString)>, &str); 6] = [
        (vec![("EDGE_TLS_CERT", cert.clone())], "EDGE_TLS_CERT is set but EDGE_TLS_KEY is not"),
        (vec![("EDGE_TLS_KEY", key.clone())], "EDGE_TLS_KEY is set but EDGE_TLS_CERT is not"),
        (vec![("EDGE_TLS_CERT", cert.clone()), ("EDGE_TLS_KEY", other_key)], "does not go with EDGE_TLS_CERT"),
        (vec![("EDGE_TLS_CERT", cert.clone()), ("EDGE_TLS_KEY", os(&dir.join("missing.key")))], "cannot read"),
        // A directory where a file should be: unreadable, whoever runs the test.
        (vec![("EDGE_TLS_CERT", os(dir)), ("EDGE_TLS_KEY", key.clone())], "cannot read"),
        (vec![("EDGE_TLS_CERT", os(&dir.join("empty.pem"))), ("EDGE_TLS_KEY", key)], "holds no certificate"),
    ];
    for (env, reason) in cases {
        let env: Vec<(&str, &std::ffi::OsStr)> = env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
        let stderr = refused_start(&env);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{env:?}: one line expected:\n{stderr}");
        assert!(
            lines[0].starts_with("edge: ") && lines[0].contains(reason),
            "{env:?}: {reason:?} expected in {stderr}"
        );
    }
}
