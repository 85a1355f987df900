use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use todo_common::auth::{unix_now, Claims, JwtSettings, Subject, TokenIssuer};

use crate::helpers::*;

fn claims() -> Claims {
    let now = unix_now();
    Claims {
        sub: Subject::parse("alice").unwrap(),
        iat: now,
        exp: now + 600,
        nbf: None,
        iss: "todo-users".into(),
        aud: "todo-api".into(),
    }
}

fn sign(claims: &Claims) -> String {
    TokenIssuer::new(&JwtSettings::with_secret(TEST_JWT_SECRET), Duration::from_secs(600))
        .unwrap()
        .sign(claims)
        .unwrap()
}

/// Every kind of bad token, with the reason label the edge counts it under.
fn bad_tokens() -> Vec<(&'static str, Option<String>, &'static str)> {
    let good = sign(&claims());
    let parts: Vec<&str> = good.split('.').collect();

    let other_kid = JwtSettings::with_shared_key("retired-long-ago", TEST_JWT_SECRET);
    let wrong_key = JwtSettings::with_secret("a-completely-different-secret-0123456789");

    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"primary"}"#);
    let mut hs512 = Header::new(Algorithm::HS512);
    hs512.kid = Some("primary".into());
    let hs512 = jsonwebtoken::encode(&hs512, &claims(), &EncodingKey::from_secret(TEST_JWT_SECRET.as_bytes())).unwrap();
    let admin = serde_json::to_vec(&Claims { sub: Subject::parse("admin").unwrap(), ..claims() }).unwrap();

    vec![
        ("missing", None, "missing"),
        ("malformed", Some("Bearer not-a-jwt".into()), "malformed"),
        ("not bearer", Some(format!("Basic {good}")), "malformed"),
        ("expired", Some(format!("Bearer {}", sign(&Claims { exp: unix_now() - 3600, ..claims() }))), "expired"),
        (
            "not yet valid",
            Some(format!("Bearer {}", sign(&Claims { nbf: Some(unix_now() + 3600), ..claims() }))),
            "not_yet_valid",
        ),
        (
            "wrong key",
            Some(format!(
                "Bearer {}",
                TokenIssuer::new(&wrong_key, Duration::from_secs(60)).unwrap().sign(&claims()).unwrap()
            )),
            "signature",
        ),
        (
            "unknown kid",
            Some(format!(
                "Bearer {}",
                TokenIssuer::new(&other_kid, Duration::from_secs(60)).unwrap().sign(&claims()).unwrap()
            )),
            "unknown_kid",
        ),
        ("alg none", Some(format!("Bearer {none_header}.{}.", parts[1])), "algorithm"),
        ("alg HS512", Some(format!("Bearer {hs512}")), "algorithm"),
        ("wrong iss", Some(format!("Bearer {}", sign(&Claims { iss: "evil".into(), ..claims() }))), "issuer"),
        ("wrong aud", Some(format!("Bearer {}", sign(&Claims { aud: "other".into(), ..claims() }))), "audience"),
        (
            "tampered payload",
            Some(format!("Bearer {}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(admin), parts[2])),
            "signature",
        ),
    ]
}

#[tokio::test]
async fn every_bad_token_is_refused_with_401_and_never_reaches_the_upstream() {
    let world = World::start().await;
    let edge = &world.edge;
    for (what, authorization, _) in bad_tokens() {
        for path in ["/users/me", "/tasks/1"] {
            let mut request = edge.client().get(edge.url(path)).header("origin", ORIGIN);
            if let Some(value) = &authorization {
                request = request.header("authorization", value);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 401, "{what} on {path}");
            let challenge = header(&response, "www-authenticate").unwrap_or("");
            assert_eq!(challenge, r#"Bearer error="invalid_token""#, "{what}");
            assert_eq!(header(&response, "access-control-allow-origin"), Some(ORIGIN), "{what}: CORS on 401");
            assert_edge_headers(&response, &format!("401 {what}"));
            problem(response, 401).await;
        }
    }
    assert_eq!(world.users.hits() + world.tasks.hits(), 0, "no bad token reached an upstream");

    let metrics = edge.metrics().await;
    for (what, _, reason) in bad_tokens() {
        let series = format!("edge_unauthorized_total{{reason=\"{reason}\"}}");
        assert!(metrics.contains(&series), "{what}: {series} missing in\n{metrics}");
    }

    // And a good one passes.
    assert_eq!(edge.get_as("/users/me", "alice").await.status(), 200);
    assert_eq!(world.users.hits(), 1);
}
