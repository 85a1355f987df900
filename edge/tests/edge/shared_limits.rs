//! `store = "redis"`: three real edge replicas against the real Redis count one budget
//! per key, sequentially and concurrently; with Redis cut mid-load they fall back to
//! their local counters without a 5xx, and come back to the shared budget by themselves.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use serde_json::Value;
use todo_test_support::net::CuttableProxy;
use todo_test_support::Backends;

use crate::helpers::*;

/// The edge's Redis calls give up after 200 ms; it pings Redis every second.
const PATIENCE: Duration = Duration::from_secs(10);

/// Stubs and a policy whose two limits (login per address, tasks per user) count in
/// Redis. Their names are new for every test: budgets live in Redis for a whole window,
/// across test runs.
struct SharedWorld {
    _users: Stub,
    tasks: Stub,
    policy: PolicyDir,
}

impl SharedWorld {
    async fn start(login_limit: u32, user_limit: u32) -> Self {
        todo_common::telemetry::init_for_tests();
        let users = Stub::start("users").await;
        let tasks = Stub::start("tasks").await;
        let policy = PolicyDir::new();
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..12];
        let (login, per_user) = (format!("login-{suffix}"), format!("user-{suffix}"));
        let routes = ROUTES
            .replace("\"login-per-ip\"", &format!("\"{login}\""))
            .replace("\"per-user\"", &format!("\"{per_user}\""));
        let limits = format!(
            r#"
# Long windows: a test never straddles a window boundary.
[limits.{login}]
requests = {login_limit}
window_seconds = 86400
key = "client_ip"
store = "redis"

[limits.{per_user}]
requests = {user_limit}
window_seconds = 86400
key = "subject"
store = "redis"
"#
        );
        policy.write("upstreams.toml", &upstreams_toml(&[users.addr], &[tasks.addr]));
        policy.write("routes.toml", &routes);
        policy.write("limits.toml", &limits);
        Self { _users: users, tasks, policy }
    }

    async fn edges(&self, count: usize, redis_url: &str) -> Vec<Edge> {
        let env = [("EDGE_REDIS_URL", redis_url)];
        join_all((0..count).map(|_| Edge::start_with(&self.policy.path, &env, "/readyz"))).await
    }
}

fn redis_url() -> String {
    Backends::from_env().redis_url
}

fn remaining(response: &reqwest::Response) -> u32 {
    header(response, "ratelimit-remaining").expect("RateLimit-Remaining").parse().expect("a number")
}

async fn readiness(edge: &Edge) -> Value {
    edge.admin_get("/readyz").await.json().await.expect("readiness body")
}

#[tokio::test]
async fn replicas_share_one_budget_one_request_at_a_time() {
    let world = SharedWorld::start(10, 100).await;
    let edges = world.edges(3, &redis_url()).await;
    let mut statuses = Vec::new();
    let mut remainings = Vec::new();
    for round in 0..30 {
        let edge = &edges[round % edges.len()];
        let response = edge.client().post(edge.url("/users/login")).send().await.expect("edge answers");
        statuses.push(response.status().as_u16());
        if response.status() == 200 {
            remainings.push(remaining(&response));
        } else {
            assert!(header(&response, "retry-after").is_some(), "Retry-After on 429");
            assert_eq!(remaining(&response), 0);
            problem(response, 429).await;
        }
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 10, "{statuses:?}");
    assert!(statuses[..10].iter().all(|s| *s == 200), "the first ten, whichever replica: {statuses:?}");
    assert_eq!(remainings, (0..10).rev().collect::<Vec<u32>>(), "RateLimit-Remaining counts the shared budget");
    for edge in &edges {
        assert_eq!(readiness(edge).await["backends"]["ratelimit-store"]["status"], "up");
    }
}

#[tokio::test]
async fn replicas_share_one_budget_under_concurrent_load() {
    const LIMIT: usize = 600;
    const IN_FLIGHT: usize = 48;
    const DEMAND: usize = 38 * IN_FLIGHT;
    let world = SharedWorld::start(10, LIMIT as u32).await;
    let edges = world.edges(3, &redis_url()).await;
    let token = token_for("carol");
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    // Waves of requests in flight together, spread over the replicas.
    for wave in 0..DEMAND / IN_FLIGHT {
        let requests = (0..IN_FLIGHT).map(|i| {
            let edge = &edges[(wave + i) % edges.len()];
            edge.client().get(edge.url("/tasks/limited")).bearer_auth(&token).send()
        });
        for response in join_all(requests).await {
            *statuses.entry(response.expect("edge answers").status().as_u16()).or_default() += 1;
        }
    }
    let accepted = statuses.get(&200).copied().unwrap_or(0);
    assert!(accepted <= LIMIT, "never more than the limit: {statuses:?}");
    assert!(accepted * 10 >= LIMIT * 9, "at least 90 % of the limit: {statuses:?}");
    assert_eq!(accepted + statuses.get(&429).copied().unwrap_or(0), DEMAND, "only 200 or 429: {statuses:?}");
    assert_eq!(world.tasks.hits(), accepted);
    let leases: f64 =
        join_all(edges.iter().map(|e| e.metric("edge_rate_limit_leases_total"))).await.into_iter().flatten().sum();
    assert!(leases < accepted as f64, "leases come in batches: {leases} leases for {accepted} requests");
}

#[tokio::test]
async fn without_redis_replicas_count_locally_and_come_back_to_the_shared_budget() {
    let redis: std::net::SocketAddr = redis_url()
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .parse()
        .expect("TEST_REDIS_URL is redis://host:port");
    let proxy = CuttableProxy::start(redis).await;
    let world = SharedWorld::start(10, 5).await;
    let edges = world.edges(2, &format!("redis://{}", proxy.addr)).await;
    let base: Vec<String> = edges.iter().map(|e| e.base.clone()).collect();
    let client = http_client();
    let as_user = move |round: usize, subject: &str| {
        let url = format!("{}/tasks/limited", base[round % base.len()]);
        client.get(url).bearer_auth(token_for(subject)).timeout(Duration::from_secs(3)).send()
    };

    // Load before, through and after the outage: every answer is 200 or 429 within 3 s,
    // never a 5xx or a hang.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let load = {
        let as_user = as_user.clone();
        tokio::spawn(async move {
            let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
            let mut round = 0;
            while !*stop_rx.borrow_and_update() {
                let response = as_user(round, "dave").await.expect("answers within 3 s");
                *statuses.entry(response.status().as_u16()).or_default() += 1;
                round += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A new user (whose first request finds Redis gone) gets the limit from each replica's
    // local counters; dave, refused before the cut, is refused without asking Redis.
    let mut accepted = 0;
    for round in 0..20 {
        if as_user(round, "erin").await.expect("answers").status() == 200 {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 2 * 5, "the local counters of two replicas");

    for edge in &edges {
        let ready = edge.admin_get("/readyz").await;
        assert_eq!(ready.status(), 200, "degraded, still ready");
        let body: Value = ready.json().await.unwrap();
        assert_eq!(body["status"], "degraded", "{body}");
        assert_eq!(body["backends"]["ratelimit-store"]["status"], "degraded", "{body}");
        assert!(edge.metric("edge_rate_limit_store_failures_total").await.is_some_and(|n| n >= 1.0));
    }
    proxy.restore();
    for edge in &edges {
        // The edge pings Redis every second, traffic or not.
        eventually("the shared store to answer again", PATIENCE, || async {
            (readiness(edge).await["status"] == "ready").then_some(())
        })
        .await;
    }
    stop_tx.send_replace(true);
    let statuses = load.await.expect("the load ran");
    assert!(statuses.keys().all(|s| *s == 200 || *s == 429), "{statuses:?}");
    assert!(statuses.get(&429).is_some_and(|n| *n > 0), "the limit held throughout: {statuses:?}");

    // The shared budget again: five for a new user across both replicas.
    let mut accepted = 0;
    for round in 0..12 {
        if as_user(round, "frank").await.expect("answers").status() == 200 {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 5);
}
