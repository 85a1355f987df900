//! `[client_ip] trusted_proxies`: behind a trusted proxy the client is the right-most
//! untrusted `X-Forwarded-For` entry; that address is what per-address limits count,
//! what the access log records and where the chain sent upstream ends. An untrusted
//! peer's header is dropped. The tests connect from 127.0.0.1, so trusting 127.0.0.0/8
//! makes the test the load balancer.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

const TRUST_LOOPBACK: &str = "[client_ip]\ntrusted_proxies = [\"127.0.0.0/8\", \"::1\"]\n";

async fn login(edge: &Edge, forwarded_for: Option<&str>) -> reqwest::Response {
    let mut request = edge.client().post(edge.url("/users/login"));
    if let Some(chain) = forwarded_for {
        request = request.header("x-forwarded-for", chain);
    }
    request.send().await.expect("edge answers")
}

/// What the upstream received as `X-Forwarded-For`.
async fn upstream_saw(response: reqwest::Response) -> String {
    let echo: Value = response.json().await.expect("the stub's echo");
    echo["headers"]["x-forwarded-for"].as_str().unwrap_or_default().to_owned()
}

async fn reloaded_to(edge: &Edge, generation: f64) {
    eventually("the policy to reload", Duration::from_secs(5), || async {
        (edge.metric("edge_policy_generation").await >= Some(generation)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_has_its_own_budget_and_chain() {
    let users = Stub::start("users").await;
    let tasks = Stub::start("tasks").await;
    let policy = PolicyDir::new();
    write_policy(&policy.path, &[users.addr], &[tasks.addr]);
    policy.write("client_ip.toml", TRUST_LOOPBACK);
    let log = policy.path.join("edge.log");
    let edge = Edge::start_logging(&policy.path, &[], &log).await;

    // 127.0.0.9 is a trusted hop, dropped; the client is 203.0.113.1.
    let first = login(&edge, Some("198.51.100.9, 203.0.113.1, 127.0.0.9")).await;
    assert_eq!(first.status(), 200);
    assert_eq!(upstream_saw(first).await, "198.51.100.9, 203.0.113.1");
    for _ in 1..LOGIN_LIMIT {
        assert_eq!(login(&edge, Some("203.0.113.1")).await.status(), 200);
    }
    problem(login(&edge, Some("203.0.113.1")).await, 429).await;
    // Another client behind the same proxy has its own budget; so has the proxy itself.
    assert_eq!(login(&edge, Some("203.0.113.2")).await.status(), 200);
    assert_eq!(login(&edge, None).await.status(), 200);
    // A malformed header counts as absent: the proxy's own budget.
    let malformed = login(&edge, Some("203.0.113.1, bogus")).await;
    assert_eq!(malformed.status(), 200);
    assert_eq!(upstream_saw(malformed).await, "127.0.0.1");

    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(edge);
    let log = std::fs::read_to_string(&log).expect("log written");
    let access = |ip: &str| log.lines().filter(|l| l.contains(&format!("\"client_ip\":\"{ip}\""))).count();
    assert_eq!(access("203.0.113.1"), LOGIN_LIMIT as usize + 1, "the access log records the client:\n{log}");
    assert_eq!(access("203.0.113.2"), 1);
}

#[tokio::test]
async fn an_untrusted_peer_is_the_client_and_its_header_is_dropped_also_after_a_reload() {
    let world = World::start().await;
    let edge = &world.edge;
    let spoofed = login(edge, Some("203.0.113.50")).await;
    assert_eq!(upstream_saw(spoofed).await, "127.0.0.1", "without [client_ip] the peer is the client");

    world.policy.write("client_ip.toml", TRUST_LOOPBACK);
    reloaded_to(edge, 2.0).await;
    assert_eq!(upstream_saw(login(edge, Some("203.0.113.50")).await).await, "203.0.113.50");

    // Trusting someone else: this peer's header is no longer believed.
    world.policy.write("client_ip.toml", "[client_ip]\ntrusted_proxies = [\"10.0.0.0/8\"]\n");
    reloaded_to(edge, 3.0).await;
    assert_eq!(upstream_saw(login(edge, Some("203.0.113.50")).await).await, "127.0.0.1");

    // A bad CIDR refuses the file; the last good policy stays.
    world.policy.write("client_ip.toml", "[client_ip]\ntrusted_proxies = [\"127.0.0.0/40\"]\n");
    eventually("the refusal to be counted", Duration::from_secs(5), || async {
        (edge.metric(r#"edge_policy_reloads_total{result="failure"}"#).await >= Some(1.0)).then_some(())
    })
    .await;
    assert_eq!(edge.metric("edge_policy_generation").await, Some(3.0));
    assert_eq!(upstream_saw(login(edge, Some("203.0.113.50")).await).await, "127.0.0.1");
}
