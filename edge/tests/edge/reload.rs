use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::helpers::*;

/// Polls `path` until it answers `status`; returns how long that took.
async fn until_status(edge: &Edge, path: &str, status: u16, patience: Duration) -> Duration {
    let started = Instant::now();
    eventually(&format!("{path} answers {status}"), patience, || async {
        (edge.get(path).await.status() == status).then_some(())
    })
    .await;
    started.elapsed()
}

/// The contract: a change takes effect within 2 s (the margin covers a loaded test machine).
const RELOAD_PATIENCE: Duration = Duration::from_millis(2500);

#[tokio::test]
async fn an_edited_file_takes_effect_within_two_seconds() {
    let world = World::start().await;
    let edge = &world.edge;
    problem(edge.get("/public/ping").await, 404).await;

    world.policy.write("routes.toml", &format!("{ROUTES}{PING_ROUTE}"));
    let took = until_status(edge, "/public/ping", 200, RELOAD_PATIENCE).await;
    eprintln!("reload after an atomic rename took {took:?}");
    assert_eq!(edge.metric("edge_policy_generation").await, Some(2.0));

    // An in-place rewrite (truncate + write) is picked up too.
    std::fs::write(world.policy.path.join("routes.toml"), ROUTES).unwrap();
    let took = until_status(edge, "/public/ping", 404, RELOAD_PATIENCE).await;
    eprintln!("reload after an in-place write took {took:?}");
}

#[tokio::test]
async fn an_invalid_file_keeps_the_last_good_policy_and_counts_a_failure() {
    let world = World::start().await;
    let edge = &world.edge;
    world.policy.write("routes.toml", &ROUTES.replace("upstream = \"tasks\"", "upstream = \"nowhere\""));
    eventually("the refusal is counted", RELOAD_PATIENCE, || async {
        (edge.metric(r#"edge_policy_reloads_total{result="failure"}"#).await == Some(1.0)).then_some(())
    })
    .await;
    assert_eq!(edge.get_as("/tasks/1", "alice").await.status(), 200, "the old routes still work");
    assert_eq!(edge.admin_get("/readyz").await.status(), 200);
    assert_eq!(edge.metric("edge_policy_generation").await, Some(1.0));

    world.policy.write("limits.toml", "[limits.x]\nrequests = \"many\"\n");
    eventually("the second refusal is counted", RELOAD_PATIENCE, || async {
        (edge.metric(r#"edge_policy_reloads_total{result="failure"}"#).await == Some(2.0)).then_some(())
    })
    .await;

    // Fixing the files loads the new set.
    world.policy.write("limits.toml", &limits_toml());
    world.policy.write("routes.toml", &format!("{ROUTES}{PING_ROUTE}"));
    until_status(edge, "/public/ping", 200, RELOAD_PATIENCE).await;
}

#[tokio::test]
async fn a_configmap_style_symlink_swap_is_picked_up() {
    todo_common::telemetry::init_for_tests();
    let users = Stub::start("users").await;
    let tasks = Stub::start("tasks").await;
    let policy = PolicyDir::new();
    let root = &policy.path;
    // What the kubelet builds: a timestamped dir, `..data` pointing at it, and one
    // symlink per key pointing through `..data`.
    let first = root.join("..2025_01_01_00_00_00.000000001");
    std::fs::create_dir(&first).unwrap();
    write_policy(&first, &[users.addr], &[tasks.addr]);
    std::os::unix::fs::symlink(first.file_name().unwrap(), root.join("..data")).unwrap();
    for name in ["upstreams.toml", "routes.toml", "limits.toml", "cors.toml"] {
        std::os::unix::fs::symlink(format!("..data/{name}"), root.join(name)).unwrap();
    }
    let edge = Edge::start_with(root, &[], "/readyz").await;
    problem(edge.get("/public/ping").await, 404).await;

    let second = root.join("..2025_01_01_00_01_00.000000002");
    std::fs::create_dir(&second).unwrap();
    write_policy(&second, &[users.addr], &[tasks.addr]);
    write_atomically(&second, "routes.toml", &format!("{ROUTES}{PING_ROUTE}"));
    std::os::unix::fs::symlink(second.file_name().unwrap(), root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(&first).unwrap();

    let took = until_status(&edge, "/public/ping", 200, RELOAD_PATIENCE).await;
    eprintln!("reload after a ..data symlink swap took {took:?}");
}

#[tokio::test]
async fn requests_in_flight_during_reloads_all_succeed_and_limits_survive() {
    let world = Arc::new(World::start().await);
    // Use up part of alice's budget; an unrelated reload must not reset it.
    assert_eq!(world.edge.get_as("/tasks/limited", "alice").await.status(), 200);

    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let world = Arc::clone(&world);
        clients.spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..40 {
                statuses.push(world.edge.get_as("/tasks/wait", "bob").await.status().as_u16());
            }
            statuses
        });
    }
    for round in 0..8 {
        let routes = if round % 2 == 0 { format!("{ROUTES}{PING_ROUTE}") } else { ROUTES.to_owned() };
        // Off this runtime, which also serves the stub upstreams: a rename on a disk busy
        // with writeback (a fresh CI machine after the build) can block for longer than
        // the route's 500 ms read timeout, and the requests in flight got 504s.
        let dir = world.policy.path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&dir, "routes.toml", &routes)).await.unwrap();
        let generation = round as f64 + 2.0;
        eventually("the reload happened", RELOAD_PATIENCE, || async {
            (world.edge.metric("edge_policy_generation").await >= Some(generation)).then_some(())
        })
        .await;
    }
    let mut all = Vec::new();
    while let Some(statuses) = clients.join_next().await {
        all.extend(statuses.unwrap());
    }
    assert_eq!(all.len(), 160);
    assert!(all.iter().all(|s| *s == 200), "every request during reloads succeeded: {all:?}");

    let response = world.edge.get_as("/tasks/limited", "alice").await;
    assert_eq!(header(&response, "ratelimit-remaining"), Some(&*(USER_LIMIT - 2).to_string()), "counter kept");
}
