//! What happens before a request reaches the proxy phases: a request head that takes too
//! long, a request Pingora cannot parse, and the keep-alive, pipelining and
//! `100 Continue` flows the connection layer must leave alone.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{
    token_for, upstreams_toml, write_atomically, write_policy, Edge, PolicyDir, Stub, World, SECURITY_HEADERS,
};

async fn connect(world: &World) -> TcpStream {
    TcpStream::connect(world.edge.base.trim_start_matches("http://")).await.expect("connects")
}

/// Reads until the peer closes (or `limit` passes); returns what came and when it ended.
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> (String, Option<Duration>) {
    let started = Instant::now();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(limit, stream.read_to_end(&mut answer)).await.is_ok();
    (String::from_utf8_lossy(&answer).into_owned(), closed.then(|| started.elapsed()))
}

/// Reads until `count` complete responses with a `content-length` body have arrived.
async fn read_responses(stream: &mut TcpStream, count: usize) -> String {
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    let complete = |text: &str| {
        let mut rest = text;
        for _ in 0..count {
            let Some(end) = rest.find("\r\n\r\n") else { return false };
            let head = rest[..end].to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let Some(next) = rest.get(end + 4 + length..) else { return false };
            rest = next;
        }
        true
    };
    tokio::time::timeout(Duration::from_secs(10), async {
        while !complete(&String::from_utf8_lossy(&answer)) {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the responses arrive");
    String::from_utf8_lossy(&answer).into_owned()
}

fn assert_edge_problem(answer: &str, status: u16, what: &str) {
    let head = answer.split("\r\n\r\n").next().unwrap_or_default().to_ascii_lowercase();
    assert!(head.starts_with(&format!("http/1.1 {status} ")), "{what}: {answer}");
    assert!(head.contains("content-type: application/problem+json"), "{what}: {head}");
    assert!(head.contains("x-request-id: "), "{what}: {head}");
    assert!(!head.contains("\r\nserver:"), "{what}: a header names the server software: {head}");
    for (name, value) in SECURITY_HEADERS {
        assert!(head.contains(&format!("{name}: {}", value.to_ascii_lowercase())), "{what}: {name} missing: {head}");
    }
    let body: serde_json::Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap_or_default())
        .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {answer}"));
    assert_eq!(body["status"], status, "{what}: {body}");
}

#[tokio::test]
async fn requests_pingora_cannot_parse_get_the_edges_own_problem() {
    let world = World::start().await;
    let many_headers = format!("GET /tasks HTTP/1.1\r\nHost: x\r\n{}\r\n", "X-H: v\r\n".repeat(500));
    for (what, request, status) in [
        ("bare CR in a header", "GET /tasks HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n".to_owned(), 400),
        ("500 header lines", many_headers, 400),
        ("not HTTP at all", "\u{1}\u{2}\u{3} hello\r\n\r\n".to_owned(), 400),
        ("CONNECT", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n".to_owned(), 405),
    ] {
        let mut stream = connect(&world).await;
        stream.write_all(request.as_bytes()).await.expect("sent");
        let (answer, closed) = read_to_close(&mut stream, Duration::from_secs(5)).await;
        assert_edge_problem(&answer, status, what);
        assert!(closed.is_some(), "{what}: the connection stays open");
    }
    assert_eq!(world.edge.metric(r#"edge_requests_total{route="_unparsable",status="400"}"#).await, Some(3.0));
    assert_eq!(world.tasks.hits(), 0);
}

#[tokio::test]
async fn a_request_head_must_arrive_within_the_head_timeout() {
    let world = World::start_with_env(&[("EDGE_HEAD_TIMEOUT_SECONDS", "1")]).await;

    // A byte every 200 ms: each read is quick, the head as a whole is not.
    let mut stream = connect(&world).await;
    let started = Instant::now();
    for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: abcdefghijklmnopqrstuvwxyz\r\n\r\n" {
        if stream.write_all(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (answer, closed) = read_to_close(&mut stream, Duration::from_secs(5)).await;
    assert_edge_problem(&answer, 408, "trickled head");
    assert!(closed.is_some(), "the connection stays open");
    assert!(started.elapsed() < Duration::from_secs(15), "cut off after {:?}", started.elapsed());

    // The same on a kept-alive connection, for the head of its second request.
    let mut stream = connect(&world).await;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("sent");
    assert!(read_responses(&mut stream, 1).await.starts_with("HTTP/1.1 200"));
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHo").await.expect("sent");
    let (answer, closed) = read_to_close(&mut stream, Duration::from_secs(5)).await;
    assert_edge_problem(&answer, 408, "stalled second head");
    assert!(closed.is_some(), "the kept-alive connection stays open");

    assert_eq!(world.edge.metric(r#"edge_requests_total{route="_head_timeout",status="408"}"#).await, Some(2.0));
}

#[tokio::test]
async fn the_head_deadline_leaves_slow_bodies_idle_connections_and_pipelining_alone() {
    // Upstream reads slower than the head deadline, so a slow body reaches the upstream.
    let users = Stub::start("users").await;
    let tasks = Stub::start("tasks").await;
    let policy = PolicyDir::new();
    write_policy(&policy.path, &[users.addr], &[tasks.addr]);
    let upstreams =
        upstreams_toml(&[users.addr], &[tasks.addr]).replace("read_timeout_ms = 500", "read_timeout_ms = 5000");
    write_atomically(&policy.path, "upstreams.toml", &upstreams);
    let edge = Edge::start_with(&policy.path, &[("EDGE_HEAD_TIMEOUT_SECONDS", "1")], "/readyz").await;
    let world = World { users, tasks, policy, edge };
    let token = token_for("user-1");

    // The head in pieces, within the deadline.
    let mut stream = connect(&world).await;
    for piece in ["GET /health", "z HTTP/1.1\r\nHo", "st: x\r\n\r\n"] {
        stream.write_all(piece.as_bytes()).await.expect("sent");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(read_responses(&mut stream, 1).await.starts_with("HTTP/1.1 200"));

    // Idle longer than the head deadline between two requests, then a body slower than it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let head = format!(
        "POST /tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: 13\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("sent");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stream.write_all(br#"{"title":"a"}"#).await.expect("sent");
    let answer = read_responses(&mut stream, 1).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""bodyBytes":13"#), "{answer}");

    // `Expect: 100-continue`: the upstream's 100 is relayed, the body follows it.
    let head = head.replace("Content-Length", "Expect: 100-continue\r\nContent-Length");
    stream.write_all(head.as_bytes()).await.expect("sent");
    let interim = read_responses(&mut stream, 1).await;
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stream.write_all(br#"{"title":"b"}"#).await.expect("sent");
    let answer = read_responses(&mut stream, 1).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Two requests in one write: the first is answered; Pingora then closes instead of
    // pipelining (RFC 9112 9.3.2 lets it), and nothing is taken for a bad head.
    let mut stream = connect(&world).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = read_to_close(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200") && !answer.contains("problem+json"), "{answer}");

    for refused in ["_head_timeout", "_unparsable"] {
        let series = format!("edge_requests_total{{route=\"{refused}\",status=\"400\"}}");
        assert_eq!(world.edge.metric(&series).await, None, "{series}");
        assert_eq!(world.edge.metric(&series.replace("400", "408")).await, None, "{series}");
    }
}
