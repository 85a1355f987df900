//! Slow clients: a connection that sends part of a request and stalls, or trickles it
//! a byte at a time, is answered (408) or closed within a bounded time at the edge and
//! at the services, instead of holding a connection forever.

use std::time::{Duration, Instant};

use todo_e2e::System;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::{authority, raw_exchange, read_until_closed, RawOutcome, User};

/// Longest we wait for any server to give up on a slow client (the edge's idle and read
/// timeouts are 60 s and its head deadline 10 s, the services' header timeout 30 s and
/// body timeout 10 s).
const PATIENCE: Duration = Duration::from_secs(90);

fn stalled_body(token: &str) -> Vec<u8> {
    format!(
        "POST /tasks HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"ti"
    )
    .into_bytes()
}

const STALLED_HEADERS: &[u8] = b"GET /tasks HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";

fn report(what: &str, outcome: &RawOutcome) -> Duration {
    let ended = outcome.ended_after.unwrap_or_else(|| panic!("{what}: still open after {PATIENCE:?}"));
    println!("slow client, {what}: {:?} after {:.1} s", outcome.status(), ended.as_secs_f64());
    if let Some(status) = outcome.status() {
        assert!((400..500).contains(&status), "{what}: answered {status}");
    }
    ended
}

#[tokio::test]
async fn stalled_requests_are_cut_off_in_bounded_time() {
    let system = System::start().await;
    let user = User::sign_up(&system.edge_url).await;
    let body = stalled_body(&user.token);
    let (edge_headers, edge_body, service_headers, service_body) = tokio::join!(
        raw_exchange(&system.edge_url, STALLED_HEADERS, PATIENCE),
        raw_exchange(&system.edge_url, &body, PATIENCE),
        raw_exchange(&system.tasks_url, STALLED_HEADERS, PATIENCE),
        raw_exchange(&system.tasks_url, &body, PATIENCE),
    );
    report("edge, stalled in the headers", &edge_headers);
    report("svc-tasks, stalled in the headers", &service_headers);
    for (what, outcome) in
        [("edge, stalled in the body", &edge_body), ("svc-tasks, stalled in the body", &service_body)]
    {
        report(what, outcome);
        assert_eq!(outcome.status(), Some(408), "{what}: {}", outcome.head());
    }
    assert!(user.tasks().await.is_empty(), "a stalled body was stored");
}

/// Sends `bytes` one at a time, `interval` apart, until the server answers or closes.
async fn trickle(base: &str, bytes: &[u8], interval: Duration) -> RawOutcome {
    let mut stream = TcpStream::connect(authority(base)).await.expect("connects");
    let started = Instant::now();
    for byte in bytes {
        if stream.write_all(&[*byte]).await.is_err() || started.elapsed() > PATIENCE {
            break;
        }
        // A server that gave up answers or closes; reading tells us without blocking long.
        let outcome = read_until_closed(&mut stream, Instant::now(), interval).await;
        if outcome.ended_after.is_some() || !outcome.response.is_empty() {
            return RawOutcome { ended_after: Some(started.elapsed()), ..outcome };
        }
    }
    read_until_closed(&mut stream, started, PATIENCE).await
}

fn long_headers() -> Vec<u8> {
    let mut request = b"GET /tasks HTTP/1.1\r\nHost: localhost\r\n".to_vec();
    request.extend(std::iter::repeat_n(b'a', 200).chain(*b": 1\r\n\r\n"));
    request
}

#[tokio::test]
async fn a_service_cuts_off_headers_trickled_a_byte_at_a_time() {
    let system = System::start().await;
    let outcome = trickle(&system.tasks_url, &long_headers(), Duration::from_secs(2)).await;
    let ended = report("svc-tasks, headers trickled a byte every 2 s", &outcome);
    assert!(ended < PATIENCE);
}

#[tokio::test]
async fn the_edge_cuts_off_headers_trickled_a_byte_at_a_time() {
    let system = System::start().await;
    let outcome = trickle(&system.edge_url, &long_headers(), Duration::from_secs(2)).await;
    let ended = report("edge, headers trickled a byte every 2 s", &outcome);
    assert!(ended < PATIENCE);
    assert_eq!(outcome.status(), Some(408), "{}", outcome.head());
}

#[tokio::test]
async fn bodies_trickled_a_byte_at_a_time_get_408() {
    let system = System::start().await;
    let user = User::sign_up(&system.edge_url).await;
    let mut request = stalled_body(&user.token);
    request.truncate(request.len() - 4);
    let mut stream = TcpStream::connect(authority(&system.edge_url)).await.unwrap();
    stream.write_all(&request).await.unwrap();
    let outcome = trickle_on(&mut stream, &[b' '; 100], Duration::from_millis(500)).await;
    report("edge, body trickled a byte every 0.5 s", &outcome);
    assert_eq!(outcome.status(), Some(408), "{}", outcome.head());
}

async fn trickle_on(stream: &mut TcpStream, bytes: &[u8], interval: Duration) -> RawOutcome {
    let started = Instant::now();
    for byte in bytes {
        if stream.write_all(&[*byte]).await.is_err() {
            break;
        }
        let outcome = read_until_closed(stream, Instant::now(), interval).await;
        if outcome.ended_after.is_some() || !outcome.response.is_empty() {
            return RawOutcome { ended_after: Some(started.elapsed()), ..outcome };
        }
    }
    read_until_closed(stream, started, PATIENCE).await
}

#[tokio::test]
async fn unparsable_requests_get_the_edges_own_problem_with_its_headers() {
    let system = System::start().await;
    for (what, request) in [
        ("bare CR in a header", &b"GET /tasks HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\nConnection: close\r\n\r\n"[..]),
        (
            "500 header lines",
            &[b"GET /tasks HTTP/1.1\r\nHost: x\r\n".to_vec(), b"X-H: v\r\n".repeat(500), b"\r\n".to_vec()].concat()[..],
        ),
    ] {
        let outcome = raw_exchange(&system.edge_url, request, Duration::from_secs(10)).await;
        let head = outcome.head().to_lowercase();
        assert_eq!(outcome.status(), Some(400), "{what}");
        assert!(!head.contains("\r\nserver:"), "{what}: a header names the server software: {head}");
        assert!(head.contains("content-type: application/problem+json"), "{what}: not a problem: {head}");
        assert!(head.contains("x-content-type-options: nosniff"), "{what}: no security headers: {head}");
    }
}
