use crate::helpers::*;

#[tokio::test]
async fn allowlisted_origins_get_their_exact_origin_others_nothing() {
    let world = World::start().await;
    let edge = &world.edge;
    let response =
        edge.client().get(edge.url("/tasks/1")).bearer_auth(token_for("alice")).header("origin", ORIGIN).send().await;
    let response = response.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "access-control-allow-origin"), Some(ORIGIN));
    assert!(header(&response, "vary").unwrap_or("").contains("Origin"));
    assert!(header(&response, "access-control-expose-headers").unwrap_or("").contains("x-request-id"));
    assert!(header(&response, "access-control-allow-credentials").is_none(), "credentials are off by default");

    let response = edge
        .client()
        .get(edge.url("/tasks/1"))
        .bearer_auth(token_for("alice"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(header(&response, "access-control-allow-origin").is_none());
    assert!(header(&response, "vary").unwrap_or("").contains("Origin"));
}

#[tokio::test]
async fn preflights_are_answered_at_the_edge_before_any_token_check() {
    let world = World::start().await;
    let edge = &world.edge;
    let preflight = |origin: &'static str, method: &'static str| {
        edge.client()
            .request(reqwest::Method::OPTIONS, edge.url("/tasks/1"))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", "authorization, content-type")
            .send()
    };
    let response = preflight(ORIGIN, "PATCH").await.unwrap();
    assert_eq!(response.status(), 204);
    assert_edge_headers(&response, "preflight");
    assert_eq!(header(&response, "access-control-allow-origin"), Some(ORIGIN));
    assert!(header(&response, "access-control-allow-methods").unwrap().contains("PATCH"));
    assert!(header(&response, "access-control-allow-headers").unwrap().contains("authorization"));
    assert!(header(&response, "access-control-max-age").is_some());

    let response = preflight("https://evil.example", "PATCH").await.unwrap();
    assert_eq!(response.status(), 204);
    assert!(header(&response, "access-control-allow-origin").is_none());
    assert!(header(&response, "access-control-allow-methods").is_none());

    let response = preflight(ORIGIN, "PUT").await.unwrap();
    assert!(header(&response, "access-control-allow-methods").is_none(), "PUT is not allowed by cors.toml");
    assert_eq!(world.tasks.hits(), 0, "preflights never reach an upstream");
}

#[tokio::test]
async fn every_answer_the_edge_writes_carries_the_full_header_set() {
    let world = World::start_with_env(&[("EDGE_MAX_BODY_BYTES", "1024")]).await;
    let edge = &world.edge;
    let client = edge.client();

    let ok = edge.get_as("/tasks/1", "alice").await;
    assert_eq!(ok.status(), 200);
    assert_edge_headers(&ok, "proxied 200 (upstream sent Server and X-Powered-By)");

    assert_edge_headers(&edge.get("/users/me").await, "401");
    assert_edge_headers(&edge.get("/nowhere").await, "404");
    let too_big = client.post(edge.url("/users/register")).body(vec![0u8; 2000]).send().await.unwrap();
    assert_eq!(too_big.status(), 413);
    assert_edge_headers(&too_big, "413");
    for _ in 0..LOGIN_LIMIT {
        client.post(edge.url("/users/login")).send().await.unwrap();
    }
    let limited = client.post(edge.url("/users/login")).send().await.unwrap();
    assert_eq!(limited.status(), 429);
    assert_edge_headers(&limited, "429");
    let broken = edge.get_as("/tasks/broken", "alice").await;
    assert_eq!(broken.status(), 502);
    assert_edge_headers(&broken, "502");
    let slow = edge.get_as("/tasks/slow", "alice").await;
    assert_eq!(slow.status(), 504);
    assert_edge_headers(&slow, "504");
    problem(slow, 504).await;
    // Liveness, and unrouted paths (readiness and metrics are the admin listener's).
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_edge_headers(&edge.get(path).await, path);
    }
}
