//! The JWT attack corpus: every token an attacker might try is refused with 401 at the
//! edge, and none of them reaches a service (their request counters stay still); the
//! services refuse the same corpus when it is sent to them directly.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use reqwest::header::{HeaderValue, AUTHORIZATION};
use serde_json::{json, Value};
use todo_common::auth::unix_now;
use todo_e2e::System;
use todo_test_support::{http_client, TEST_JWT_SECRET};

use crate::support::{assert_client_error, edge_unauthorized, raw_exchange, raw_get, service_requests, User};

const PROTECTED: &[&str] = &["/tasks", "/users/me", "/notifications"];

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Claims that would be accepted, with `changes` merged in (`null` removes a claim).
fn claims(sub: &str, changes: Value) -> Value {
    let now = unix_now();
    let mut claims = json!({ "sub": sub, "iat": now, "exp": now + 600, "iss": "todo-users", "aud": "todo-api" });
    for (key, value) in changes.as_object().expect("an object of changes") {
        match value {
            Value::Null => claims.as_object_mut().unwrap().remove(key),
            _ => claims.as_object_mut().unwrap().insert(key.clone(), value.clone()),
        };
    }
    claims
}

fn hs256_header() -> Value {
    json!({ "alg": "HS256", "typ": "JWT", "kid": "primary" })
}

/// `header.payload.signature`, signed with `key` by `alg` whatever the header claims.
fn forge(header: &Value, claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
    let signing_input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let signature = jsonwebtoken::crypto::sign(signing_input.as_bytes(), key, alg).expect("signs");
    format!("{signing_input}.{signature}")
}

fn hmac(secret: &[u8]) -> EncodingKey {
    EncodingKey::from_secret(secret)
}

/// An RSA private key (PKCS#1 DER) and its public key (PEM), made by `openssl`;
/// without it the RS256 cases are left out.
fn rsa_key_pair() -> Option<(Vec<u8>, Vec<u8>)> {
    let dir = tempfile::tempdir().ok()?;
    let (pem, der, public) = (dir.path().join("key.pem"), dir.path().join("key.der"), dir.path().join("pub.pem"));
    let openssl = |args: &[&str], files: &[&std::path::Path]| {
        let mut command = std::process::Command::new("openssl");
        command.args(args);
        for (flag, file) in ["-in", "-out"].iter().zip(files) {
            command.arg(flag).arg(file);
        }
        command.output().is_ok_and(|o| o.status.success())
    };
    let generated = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
        .arg(&pem)
        .output()
        .is_ok_and(|o| o.status.success());
    let converted = generated && openssl(&["rsa", "-traditional", "-outform", "DER"], &[&pem, &der]);
    let exported = converted && openssl(&["pkey", "-pubout"], &[&pem, &public]);
    exported.then(|| Some((std::fs::read(&der).ok()?, std::fs::read(&public).ok()?))).flatten()
}

/// Every hostile `Authorization` value, by name. `valid` is a real token of `sub`.
fn corpus(sub: &str, valid: &str) -> Vec<(String, Vec<u8>)> {
    let right = hmac(TEST_JWT_SECRET.as_bytes());
    let good = claims(sub, json!({}));
    let now = unix_now();
    let mut tokens: Vec<(String, String)> = Vec::new();
    let mut add = |name: &str, token: String| tokens.push((name.to_owned(), token));

    // alg none, however spelled, with and without a signature.
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = json!({ "alg": alg, "typ": "JWT", "kid": "primary" });
        add(&format!("alg {alg}"), format!("{}.{}.", b64(header.to_string()), b64(good.to_string())));
        let signed = forge(&header, &good, &right, Algorithm::HS256);
        add(&format!("alg {alg} with an HS256 signature"), signed);
    }
    add("no alg", forge(&json!({ "typ": "JWT", "kid": "primary" }), &good, &right, Algorithm::HS256));
    // Other algorithms, even keyed with the right secret.
    add("HS384 with the right key", forge(&json!({"alg":"HS384","kid":"primary"}), &good, &right, Algorithm::HS384));
    add("HS512 with the right key", forge(&json!({"alg":"HS512","kid":"primary"}), &good, &right, Algorithm::HS512));
    // RS/HS confusion: an RS256 header over an HMAC of the shared secret, and the reverse.
    add(
        "RS256 header, HS256 signature",
        forge(&json!({"alg":"RS256","kid":"primary"}), &good, &right, Algorithm::HS256),
    );
    add(
        "ES256 header, HS256 signature",
        forge(&json!({"alg":"ES256","kid":"primary"}), &good, &right, Algorithm::HS256),
    );
    if let Some((private, public)) = rsa_key_pair() {
        let rsa = EncodingKey::from_rsa_der(&private);
        add(
            "RS256 signed with an RSA key",
            forge(&json!({"alg":"RS256","kid":"primary"}), &good, &rsa, Algorithm::RS256),
        );
        add("HS256 keyed with the RSA public key", forge(&hs256_header(), &good, &hmac(&public), Algorithm::HS256));
    } else {
        eprintln!("openssl unavailable: the RS256-signed cases are left out");
    }
    // Wrong, empty and guessable keys.
    add("wrong key", forge(&hs256_header(), &good, &hmac(b"another-secret-0123456789-abcdefghij"), Algorithm::HS256));
    add("empty key", forge(&hs256_header(), &good, &hmac(b""), Algorithm::HS256));
    add("half of the key", forge(&hs256_header(), &good, &hmac(&TEST_JWT_SECRET.as_bytes()[..16]), Algorithm::HS256));
    add("the key id as key", forge(&hs256_header(), &good, &hmac(b"primary"), Algorithm::HS256));
    // Key ids: unknown, missing, odd, and a header that brings its own key.
    for (name, kid) in [
        ("unknown kid", json!("other")),
        ("empty kid", json!("")),
        ("kid path traversal", json!("../../../../dev/null")),
        ("kid injection", json!("primary' OR '1'='1")),
        ("numeric kid", json!(1)),
        ("kid array", json!(["primary"])),
    ] {
        add(name, forge(&json!({ "alg": "HS256", "kid": kid }), &good, &right, Algorithm::HS256));
    }
    add("no kid", forge(&json!({ "alg": "HS256", "typ": "JWT" }), &good, &right, Algorithm::HS256));
    let attacker = b"attacker-chosen-secret-0123456789abcd";
    let jwk = json!({ "alg": "HS256", "kid": "primary", "jwk": { "kty": "oct", "k": b64(attacker) } });
    add("embedded jwk", forge(&jwk, &good, &hmac(attacker), Algorithm::HS256));
    let jku = json!({ "alg": "HS256", "kid": "primary", "jku": "http://127.0.0.1:1/keys.json" });
    add("jku header", forge(&jku, &good, &hmac(attacker), Algorithm::HS256));
    // Huge tokens, correctly signed: refused by size before any parsing.
    let padded = claims(sub, json!({ "pad": "x".repeat(6 * 1024) }));
    add("huge token (8 KiB)", forge(&hs256_header(), &padded, &right, Algorithm::HS256));
    let padded = claims(sub, json!({ "pad": "x".repeat(48 * 1024) }));
    add("huge token (64 KiB)", forge(&hs256_header(), &padded, &right, Algorithm::HS256));
    // Time and audience claims, all correctly signed.
    let signed = |changes: Value| forge(&hs256_header(), &claims(sub, changes), &right, Algorithm::HS256);
    add("expired an hour ago", signed(json!({ "exp": now - 3600 })));
    add("expired beyond the leeway", signed(json!({ "exp": now - 120 })));
    add("not valid for an hour", signed(json!({ "nbf": now + 3600 })));
    add("wrong iss", signed(json!({ "iss": "evil-issuer" })));
    add("no iss", signed(json!({ "iss": null })));
    add("wrong aud", signed(json!({ "aud": "another-api" })));
    add("aud list without ours", signed(json!({ "aud": ["another-api"] })));
    add("no aud", signed(json!({ "aud": null })));
    add("no exp", signed(json!({ "exp": null })));
    add("exp as a string", signed(json!({ "exp": (now + 600).to_string() })));
    add("no sub", signed(json!({ "sub": null })));
    add("sub as an object", signed(json!({ "sub": { "$ne": null } })));
    add("claims not an object", forge(&hs256_header(), &json!(["sub", sub]), &right, Algorithm::HS256));
    // Tampering with a real token.
    let parts: Vec<&str> = valid.split('.').collect();
    let other = b64(claims("someone-else", json!({})).to_string());
    add("tampered payload", format!("{}.{other}.{}", parts[0], parts[2]));
    let mut signature = parts[2].to_owned().into_bytes();
    signature[10] = if signature[10] == b'A' { b'B' } else { b'A' };
    add("tampered signature", format!("{}.{}.{}", parts[0], parts[1], String::from_utf8(signature).unwrap()));
    add("signature stripped", format!("{}.{}.", parts[0], parts[1]));
    add("two segments", format!("{}.{}", parts[0], parts[1]));
    add("four segments", format!("{valid}.{}", parts[2]));
    add("header swapped for alg none", format!("{}.{}.{}", b64(r#"{"alg":"none"}"#), parts[1], parts[2]));
    add("not base64", "!!!.@@@.###".to_owned());
    add("not a JWT", "not-a-token".to_owned());

    let mut values: Vec<(String, Vec<u8>)> =
        tokens.into_iter().map(|(name, token)| (name, format!("Bearer {token}").into_bytes())).collect();
    // Header shapes around a real token.
    for (name, value) in [
        ("empty bearer", "Bearer ".to_owned()),
        ("scheme only", "Bearer".to_owned()),
        ("basic scheme", "Basic dXNlcjpwYXNzd29yZA==".to_owned()),
        ("token without a scheme", valid.to_owned()),
        ("token then junk", format!("Bearer {valid} junk")),
        ("two tokens", format!("Bearer {valid}, Bearer {valid}")),
        ("other scheme named bearer-ish", format!("Bearerx {valid}")),
        ("token in quotes", format!("Bearer \"{valid}\"")),
    ] {
        values.push((name.to_owned(), value.into_bytes()));
    }
    values.push(("non-UTF-8 bytes".to_owned(), b"Bearer \xff\xfe\xfd.\xc3\x28.\xa0\xa1".to_vec()));
    values
}

#[tokio::test]
async fn every_token_attack_is_a_401_at_the_edge_and_never_reaches_a_service() {
    let system = System::start().await;
    let victim = User::sign_up(&system.edge_url).await;
    let corpus = corpus(&victim.id, &victim.token);
    let http = http_client();

    let reached_before = service_requests(&system).await;
    let refused_before = edge_unauthorized(&system).await;
    let mut sent = 0;
    for (name, value) in &corpus {
        for path in PROTECTED {
            let value = HeaderValue::from_bytes(value).unwrap_or_else(|e| panic!("{name}: {e}"));
            let response =
                http.get(format!("{}{path}", system.edge_url)).header(AUTHORIZATION, value).send().await.unwrap();
            let what = format!("{name} on {path}");
            assert_eq!(response.status(), 401, "{what}");
            assert_eq!(response.headers()["www-authenticate"], "Bearer error=\"invalid_token\"", "{what}");
            assert_client_error(response, &what).await;
            sent += 1;
        }
    }
    // Header injection a client library would refuse to send.
    let injections: Vec<(&str, Vec<u8>)> = vec![
        ("CRLF then an identity header", raw_get("/tasks", &[b"Authorization: Bearer x", b"X-User-Id: victim"])),
        ("bare CR smuggling a header", raw_get("/tasks", &[b"Authorization: Bearer x\rX-User-Id: victim"])),
        ("bare LF smuggling a header", raw_get("/tasks", &[b"Authorization: Bearer x\nX-User-Id: victim"])),
        ("obs-fold continuation", raw_get("/tasks", &[b"Authorization: Bearer x", b" X-User-Id: victim"])),
        ("NUL inside the token", raw_get("/tasks", &[format!("Authorization: Bearer \0{}", victim.token).as_bytes()])),
        ("two Authorization headers, bad first", {
            let second = format!("Authorization: Bearer {}", victim.token.replace('.', ".x"));
            raw_get("/tasks", &[b"Authorization: Bearer not-a-token", second.as_bytes()])
        }),
        ("space before the colon", raw_get("/tasks", &[format!("Authorization : Bearer {}", victim.token).as_bytes()])),
    ];
    for (name, request) in &injections {
        let outcome = raw_exchange(&system.edge_url, request, Duration::from_secs(10)).await;
        let status = outcome.status();
        assert!(matches!(status, Some(400 | 401)), "{name}: expected 400 or 401, got {status:?}: {}", outcome.head());
    }

    let reached = service_requests(&system).await - reached_before;
    let refused = edge_unauthorized(&system).await - refused_before;
    println!(
        "token corpus: {} cases x {} routes = {sent} requests, {} header injections; edge_unauthorized_total +{refused}; \
         requests reaching a service: {reached}",
        corpus.len(),
        PROTECTED.len(),
        injections.len()
    );
    assert_eq!(reached, 0.0, "a refused token reached a service");
    assert!(refused >= sent as f64, "the edge counted {refused} refusals for {sent} refused requests");
}

#[tokio::test]
async fn the_services_refuse_the_same_tokens_when_called_directly() {
    let system = System::start().await;
    let victim = User::sign_up(&system.edge_url).await;
    let http = http_client();
    let targets = [
        (system.tasks_url.clone(), "/tasks"),
        (system.users_url.clone(), "/users/me"),
        (system.notify_url.clone(), "/notifications"),
    ];
    for (name, value) in corpus(&victim.id, &victim.token) {
        for (base, path) in &targets {
            let value = HeaderValue::from_bytes(&value).unwrap();
            let response = http.get(format!("{base}{path}")).header(AUTHORIZATION, value).send().await.unwrap();
            let what = format!("{name} straight at {base}{path}");
            assert_eq!(response.status(), 401, "{what}");
            assert_client_error(response, &what).await;
        }
    }
}
