use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn public_routes_pass_without_a_token_and_protected_ones_with_one() {
    let world = World::start().await;
    let edge = &world.edge;

    let response =
        edge.client().post(edge.url("/users/register")).json(&serde_json::json!({"a": 1})).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_edge_headers(&response, "proxied 200");
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["upstream"], "users");
    assert_eq!(seen["path"], "/users/register");
    assert_eq!(seen["bodyBytes"], 7);

    let response = edge.get_as("/users/me", "alice").await;
    assert_eq!(response.status(), 200);
    let seen: Value = response.json().await.unwrap();
    assert!(seen["headers"]["authorization"].as_str().unwrap().starts_with("Bearer "), "the token is passed on");

    let response = edge.get_as("/tasks/abc/complete?x=1", "alice").await;
    let seen: Value = response.json().await.unwrap();
    assert_eq!((seen["upstream"].as_str(), seen["path"].as_str()), (Some("tasks"), Some("/tasks/abc/complete")));
    assert_eq!(world.users.hits(), 2);
    assert_eq!(world.tasks.hits(), 1);
}

#[tokio::test]
async fn unknown_paths_methods_and_ambiguous_paths_are_answered_by_the_edge() {
    let world = World::start().await;
    let edge = &world.edge;
    let response = edge.get("/nowhere").await;
    assert_edge_headers(&response, "404");
    problem(response, 404).await;

    let response = edge.get("/users/register").await;
    assert_eq!(header(&response, "allow"), Some("POST"));
    assert_edge_headers(&response, "405");
    problem(response, 405).await;

    // A prefix route is never walked out of (sent raw: HTTP clients normalize dot segments).
    for path in ["/tasks/../users/me", "/tasks/%2e%2E/users/me", "/tasks//x"] {
        let token = token_for("alice");
        let answer = raw_request(
            edge,
            &format!("GET {path} HTTP/1.1\r\nhost: edge\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(answer.to_ascii_lowercase().contains("content-security-policy"), "{answer}");
    }
    assert_eq!(world.users.hits() + world.tasks.hits(), 0);
}

#[tokio::test]
async fn request_ids_are_kept_when_sane_generated_otherwise_and_forwarded() {
    let world = World::start().await;
    let edge = &world.edge;
    let send = |id: Option<&'static str>| {
        let mut request = edge.client().get(edge.url("/tasks/1")).bearer_auth(token_for("alice"));
        if let Some(id) = id {
            request = request.header("x-request-id", id);
        }
        request.send()
    };

    let response = send(Some("abc-123_x.y")).await.unwrap();
    assert_eq!(header(&response, "x-request-id"), Some("abc-123_x.y"));
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["headers"]["x-request-id"], "abc-123_x.y");

    for sent in [Some("has spaces and !"), None] {
        let response = send(sent).await.unwrap();
        let id = header(&response, "x-request-id").unwrap().to_owned();
        assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        let seen: Value = response.json().await.unwrap();
        assert_eq!(seen["headers"]["x-request-id"], id.as_str(), "the upstream gets the same id");
    }

    // Answers the edge writes itself carry it too.
    let response = edge.client().get(edge.url("/users/me")).header("x-request-id", "req-401").send().await.unwrap();
    assert_eq!(header(&response, "x-request-id"), Some("req-401"));
}

#[tokio::test]
async fn forwarding_headers_are_set_and_identity_headers_stripped() {
    let world = World::start().await;
    let edge = &world.edge;
    let response = edge
        .client()
        .get(edge.url("/tasks/1"))
        .bearer_auth(token_for("alice"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-user-id", "admin")
        .header("x-authenticated-user", "admin")
        .send()
        .await
        .unwrap();
    let seen: Value = response.json().await.unwrap();
    let headers = &seen["headers"];
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert!(headers.get("x-user-id").is_none() && headers.get("x-authenticated-user").is_none(), "{headers}");
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused_with_413() {
    let world = World::start_with_env(&[("EDGE_MAX_BODY_BYTES", "2048")]).await;
    let edge = &world.edge;
    let response = edge.client().post(edge.url("/users/register")).body(vec![b'a'; 2049]).send().await.unwrap();
    assert_edge_headers(&response, "413");
    problem(response, 413).await;
    assert_eq!(world.users.hits(), 0, "a declared oversize body never reaches the upstream");

    let response = edge.client().post(edge.url("/users/register")).body(vec![b'a'; 2048]).send().await.unwrap();
    assert_eq!(response.status(), 200);

    // A chunked body has no length up front: refused while streaming.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(edge.base.trim_start_matches("http://")).await.unwrap();
    let chunk = vec![b'b'; 3000];
    let head = "POST /users/register HTTP/1.1\r\nhost: edge\r\ntransfer-encoding: chunked\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await.unwrap();
    stream.write_all(&chunk).await.unwrap();
    stream.write_all(b"\r\n").await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the edge answers instead of waiting for the rest of the body");
    let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 413"), "{text}");
    assert!(text.contains("x-frame-options: sameorigin") && text.contains("application/problem+json"), "{text}");
    // A client that goes on sending is not reset under its writes (it could lose the
    // answer): the edge reads and drops the rest of the body, then closes.
    let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
    for _ in 0..10 {
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        stream.write_all(&framed).await.expect("the rest of the body is read after the 413");
    }
    stream.write_all(b"0\r\n\r\n").await.unwrap();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection ends after the body");
}

#[tokio::test]
async fn readiness_and_metrics_are_on_the_admin_listener_and_the_public_port_keeps_liveness_only() {
    let world = World::start().await;
    let edge = &world.edge;
    let response = edge.get("/healthz").await;
    assert_edge_headers(&response, "healthz");
    assert_eq!(response.status(), 200);
    for path in ["/readyz", "/metrics"] {
        let response = edge.get(path).await;
        assert_edge_headers(&response, path);
        let body = problem(response, 404).await;
        assert!(body["detail"].as_str().unwrap().contains(path), "{body}");
    }
    let response = edge.admin_get("/healthz").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), r#"{"status":"alive"}"#);
    let unknown = edge.admin_get("/tasks/1").await;
    problem(unknown, 404).await;
    let post = http_client().post(edge.admin_url("/metrics")).body("x").send().await.unwrap();
    assert_eq!(header(&post, "allow"), Some("GET"));
    problem(post, 405).await;

    let response = edge.admin_get("/readyz").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["backends"]["policy"]["status"], "up");
    assert_eq!(body["backends"]["upstream:users"]["status"], "up");
    assert_eq!(body["backends"]["upstream:tasks"]["healthy"], 1);

    edge.get_as("/tasks/1", "alice").await;
    // A request is counted once its answer is sent: wait for the count.
    let series = r#"edge_requests_total{route="tasks",status="200"}"#;
    eventually("the request is counted", std::time::Duration::from_secs(5), || async {
        (edge.metric(series).await == Some(1.0)).then_some(())
    })
    .await;
    let metrics = edge.metrics().await;
    for series in [
        r#"edge_requests_total{route="tasks",status="200"} 1"#,
        r#"edge_request_duration_seconds_count{route="tasks"} 1"#,
        r#"edge_upstream_duration_seconds_count{upstream="tasks"} 1"#,
        r#"edge_policy_reloads_total{result="failure"} 0"#,
        r#"edge_policy_reloads_total{result="success"} 1"#,
        "edge_policy_generation 1",
        "edge_policy_info{fingerprint=",
    ] {
        assert!(metrics.contains(series), "{series} missing in:\n{metrics}");
    }
}

#[tokio::test]
async fn without_a_valid_policy_the_edge_runs_unready_until_one_appears() {
    todo_common::telemetry::init_for_tests();
    let users = Stub::start("users").await;
    let tasks = Stub::start("tasks").await;
    let policy = PolicyDir::new();
    policy.write("routes.toml", "this is not toml");
    let edge = Edge::start(&policy.path, &[]).await;
    let response = edge.admin_get("/readyz").await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["backends"]["policy"]["status"], "down");
    problem(edge.get_as("/tasks/1", "alice").await, 503).await;
    assert_eq!(edge.metric(r#"edge_policy_reloads_total{result="failure"}"#).await, Some(1.0));

    write_policy(&policy.path, &[users.addr], &[tasks.addr]);
    eventually("the fixed policy is loaded", std::time::Duration::from_secs(3), || async {
        (edge.admin_get("/readyz").await.status() == 200).then_some(())
    })
    .await;
    assert_eq!(edge.get_as("/tasks/1", "alice").await.status(), 200);
}
