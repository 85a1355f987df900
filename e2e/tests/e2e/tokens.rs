//! EdDSA tokens with real processes: svc-users signs and serves its JWK Set over HTTP;
//! the edge, svc-tasks and svc-notify verify with it. A key rotation needs no restart of
//! any verifier, and a retired key stops working everywhere, the edge's cache included.

use std::path::Path;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};
use todo_common::auth::{unix_now, Claims, JwtSettings, PrivateKey, Subject, TokenIssuer, TokenKeys};
use todo_e2e::{Options, System, SIGNING_KEY_FILE};
use todo_test_support::{eventually, http_client, unique_name};

/// Logs in and returns the access token.
async fn login(system: &System, credentials: &Value) -> String {
    let answer = http_client().post(format!("{}/users/login", system.edge_url)).json(credentials).send().await;
    let body: Value = answer.expect("login answers").json().await.expect("login body");
    body["accessToken"].as_str().expect("an access token").to_owned()
}

/// The status of `GET /tasks` and `GET /notifications` with `token`, through the edge
/// and straight at each service.
async fn statuses(system: &System, token: &str) -> Vec<(String, StatusCode)> {
    let http = http_client();
    let mut statuses = Vec::new();
    for (base, path) in [
        (&system.edge_url, "/tasks"),
        (&system.edge_url, "/notifications"),
        (&system.tasks_url, "/tasks"),
        (&system.notify_url, "/notifications"),
    ] {
        let answer = http.get(format!("{base}{path}")).bearer_auth(token).send().await.expect("an answer");
        statuses.push((format!("{base}{path}"), answer.status()));
    }
    statuses
}

async fn accepted_everywhere(system: &System, token: &str) -> bool {
    statuses(system, token).await.iter().all(|(_, status)| *status == StatusCode::OK)
}

async fn refused_everywhere(system: &System, token: &str) -> bool {
    statuses(system, token).await.iter().all(|(_, status)| *status == StatusCode::UNAUTHORIZED)
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).expect("a token header").kid.expect("a kid")
}

async fn published_kids(system: &System) -> Vec<String> {
    let set: Value = http_client()
        .get(format!("{}/.well-known/jwks.json", system.edge_url))
        .send()
        .await
        .expect("the JWK Set answers")
        .json()
        .await
        .expect("a JWK Set");
    set["keys"].as_array().expect("keys").iter().map(|k| k["kid"].as_str().expect("kid").to_owned()).collect()
}

fn write_public_key(path: &Path, key: &PrivateKey) -> String {
    std::fs::write(path, key.public_key().to_pem()).expect("public key written");
    path.display().to_string()
}

#[tokio::test]
async fn a_signing_key_rotates_with_no_verifier_restarted_and_a_retired_key_stops_everywhere() {
    let mut system = System::start_with_options(Options { jwks_refresh_seconds: 1, ..Options::default() }).await;
    let keys = system.keys.path().to_owned();
    let credentials =
        json!({ "email": format!("{}@example.com", unique_name("rotation")), "password": "rotate-me-please" });
    let registered = http_client().post(format!("{}/users/register", system.edge_url)).json(&credentials).send().await;
    assert_eq!(registered.expect("register answers").status(), 201);
    let old_token = login(&system, &credentials).await;
    assert_eq!(kid_of(&old_token), "primary");
    assert!(accepted_everywhere(&system, &old_token).await, "{:?}", statuses(&system, &old_token).await);
    assert_eq!(published_kids(&system).await, ["primary"]);

    // 1. Publish the new key; svc-users still signs with the old one.
    let old_key = PrivateKey::read(&keys.join(SIGNING_KEY_FILE)).expect("the old key");
    let new_key = PrivateKey::generate();
    let new_key_file = keys.join("next.pem");
    std::fs::write(&new_key_file, new_key.to_pem()).expect("new key written");
    let new_public = write_public_key(&keys.join("next.pub.pem"), &new_key);
    let old_public = write_public_key(&keys.join("primary.pub.pem"), &old_key);
    system.set_env("svc-users", "JWT_PREVIOUS_PUBLIC_KEYS", Some(&format!("next={new_public}")));
    system.restart("svc-users").await;
    assert_eq!(published_kids(&system).await, ["primary", "next"]);
    assert_eq!(kid_of(&login(&system, &credentials).await), "primary");

    // 2. Switch the signer; the old key stays published.
    system.set_env("svc-users", "JWT_SIGNING_KEY", Some(&new_key_file.display().to_string()));
    system.set_env("svc-users", "JWT_KID", Some("next"));
    system.set_env("svc-users", "JWT_PREVIOUS_PUBLIC_KEYS", Some(&format!("primary={old_public}")));
    system.restart("svc-users").await;
    let new_token = login(&system, &credentials).await;
    assert_eq!(kid_of(&new_token), "next");
    assert!(accepted_everywhere(&system, &new_token).await, "{:?}", statuses(&system, &new_token).await);
    assert!(accepted_everywhere(&system, &old_token).await, "old tokens live out their lifetime");

    // 3. (Tokens of the old key expire within one lifetime; this test retires it early.)
    // 4. Retire the old key: within one refresh interval (1 s here) every verifier
    //    refuses its tokens, the edge's cache of verified tokens included.
    system.set_env("svc-users", "JWT_PREVIOUS_PUBLIC_KEYS", None);
    system.restart("svc-users").await;
    assert_eq!(published_kids(&system).await, ["next"]);
    eventually("the retired key to be refused everywhere", Duration::from_secs(5), || {
        let (system, old_token) = (&system, &old_token);
        async move { refused_everywhere(system, old_token).await.then_some(()) }
    })
    .await;
    assert!(accepted_everywhere(&system, &new_token).await);
}

#[tokio::test]
async fn verifiers_accept_nothing_but_eddsa_tokens_of_the_set_and_made_up_kids_fetch_little() {
    // A long refresh interval: every fetch seen below comes from unknown kids.
    let system = System::start_with_options(Options { jwks_refresh_seconds: 300, ..Options::default() }).await;
    let user = system.token_for("someone");
    assert!(accepted_everywhere(&system, &user).await);
    let key = PrivateKey::read(&system.keys.path().join(SIGNING_KEY_FILE)).expect("the signing key");
    let public = key.public_key();

    let claims = Claims {
        sub: Subject::parse("someone").unwrap(),
        iat: unix_now(),
        exp: unix_now() + 600,
        nbf: None,
        iss: "todo-users".into(),
        aud: "todo-api".into(),
    };
    let sign = |alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Claims| {
        let mut header = Header::new(alg);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, claims, key).expect("signs")
    };
    let hs256_with_public_key =
        sign(Algorithm::HS256, "primary", &EncodingKey::from_secret(public.x().as_bytes()), &claims);
    let hs256_with_pem =
        sign(Algorithm::HS256, "primary", &EncodingKey::from_secret(public.to_pem().as_bytes()), &claims);
    let payload = user.split('.').nth(1).expect("a payload").to_owned();
    let alg_none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIiwia2lkIjoicHJpbWFyeSJ9.{payload}.");
    let eddsa = |kid: &str, key: &PrivateKey, claims: &Claims| {
        let settings =
            JwtSettings::with_keys(TokenKeys::Signing { kid: kid.into(), key: key.clone(), published: vec![] });
        TokenIssuer::new(&settings, Duration::from_secs(600)).expect("an issuer").sign(claims).expect("signs")
    };
    let same_kid_other_key = eddsa("primary", &PrivateKey::generate(), &claims);
    let expired = eddsa("primary", &key, &Claims { exp: unix_now() - 3600, ..claims.clone() });
    let hs256_any_key = todo_test_support::token_for("someone");

    let jwks_fetches = || async {
        let metrics = http_client().get(format!("{}/metrics", system.users_url)).send().await.expect("metrics");
        let text = metrics.text().await.expect("metrics text");
        text.lines()
            .filter(|l| l.starts_with("http_requests_total") && l.contains("/.well-known/jwks.json"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let before = jwks_fetches().await;
    for (name, token) in [
        ("HS256 keyed with the public key", hs256_with_public_key),
        ("HS256 keyed with the public key's PEM", hs256_with_pem),
        ("alg none", alg_none),
        ("another key under the same kid", same_kid_other_key),
        ("expired", expired),
        ("HS256 with any key", hs256_any_key),
    ] {
        assert!(refused_everywhere(&system, &token).await, "{name}: {:?}", statuses(&system, &token).await);
    }
    for n in 0..20 {
        let made_up = eddsa(&format!("made-up-{n}"), &key, &claims);
        assert!(refused_everywhere(&system, &made_up).await, "unknown kid {n}");
    }
    // Three verifiers (edge, svc-tasks, svc-notify), each at most one fetch per 10 s.
    let fetched = jwks_fetches().await - before;
    assert!((1.0..=3.0).contains(&fetched), "made-up kids caused {fetched} fetches of the JWK Set");
    assert!(accepted_everywhere(&system, &user).await);
}
