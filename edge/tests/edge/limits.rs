use crate::helpers::*;

fn limit_headers(response: &reqwest::Response) -> (u32, u32, u64) {
    let number =
        |name: &str| header(response, name).unwrap_or_else(|| panic!("{name} missing")).parse::<u64>().unwrap();
    (number("ratelimit-limit") as u32, number("ratelimit-remaining") as u32, number("ratelimit-reset"))
}

#[tokio::test]
async fn public_routes_are_limited_per_client_address() {
    let world = World::start().await;
    let edge = &world.edge;
    let login = || edge.client().post(edge.url("/users/login")).header("origin", ORIGIN).send();
    for expected_remaining in (0..LOGIN_LIMIT).rev() {
        let response = login().await.unwrap();
        assert_eq!(response.status(), 200);
        let (limit, remaining, reset) = limit_headers(&response);
        assert_eq!((limit, remaining), (LOGIN_LIMIT, expected_remaining));
        assert!((1..=86_400).contains(&reset), "{reset}");
    }
    let refused = login().await.unwrap();
    let (_, remaining, reset) = limit_headers(&refused);
    assert_eq!(remaining, 0);
    let retry_after: u64 = header(&refused, "retry-after").expect("Retry-After").parse().unwrap();
    assert!(retry_after >= 1 && retry_after <= reset.max(1), "Retry-After {retry_after}, reset {reset}");
    assert_eq!(header(&refused, "access-control-allow-origin"), Some(ORIGIN), "CORS on 429");
    problem(refused, 429).await;
    assert_eq!(world.users.hits(), LOGIN_LIMIT as usize, "the refused request never reached the upstream");

    // Routes without a limit carry no limit headers and are not affected.
    let register = edge.client().post(edge.url("/users/register")).send().await.unwrap();
    assert_eq!(register.status(), 200);
    assert!(header(&register, "ratelimit-limit").is_none());
    assert_eq!(edge.metric(r#"edge_rate_limited_total{route="login"}"#).await, Some(1.0));
}

#[tokio::test]
async fn protected_routes_are_limited_per_subject() {
    let world = World::start().await;
    let edge = &world.edge;
    for expected_remaining in (0..USER_LIMIT).rev() {
        let response = edge.get_as("/tasks/limited", "alice").await;
        assert_eq!(response.status(), 200);
        assert_eq!(limit_headers(&response).1, expected_remaining);
    }
    let refused = edge.get_as("/tasks/limited", "alice").await;
    assert!(header(&refused, "retry-after").is_some());
    problem(refused, 429).await;

    // Bob, from the same address, has his own budget.
    let bob = edge.get_as("/tasks/limited", "bob").await;
    assert_eq!(bob.status(), 200);
    assert_eq!(limit_headers(&bob), (USER_LIMIT, USER_LIMIT - 1, limit_headers(&bob).2));
    assert_eq!(world.tasks.hits(), USER_LIMIT as usize + 1);
}
