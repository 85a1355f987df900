//! Issuing and verifying in both modes, the attack tokens, and the JWK Set fetched
//! over real HTTP from a small server whose set each test changes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::*;
use crate::health::BackendState;

const SECRET: &str = "0123456789abcdefghijklmnopqrstuvwxyz";

fn hs256() -> (TokenIssuer, TokenVerifier) {
    let settings = JwtSettings::with_secret(SECRET);
    (TokenIssuer::new(&settings, Duration::from_secs(60)).unwrap(), TokenVerifier::new(&settings))
}

fn signing_settings(kid: &str, key: &PrivateKey) -> JwtSettings {
    JwtSettings::with_keys(TokenKeys::Signing { kid: kid.into(), key: key.clone(), published: Vec::new() })
}

fn eddsa_issuer(kid: &str, key: &PrivateKey) -> TokenIssuer {
    TokenIssuer::new(&signing_settings(kid, key), Duration::from_secs(60)).unwrap()
}

fn claims(exp_offset: i64) -> Claims {
    let now = unix_now();
    Claims {
        sub: Subject::parse("u1").unwrap(),
        iat: now,
        exp: (now as i64 + exp_offset) as u64,
        nbf: None,
        iss: "todo-users".into(),
        aud: "todo-api".into(),
    }
}

#[test]
fn issued_tokens_verify() {
    let (issuer, verifier) = hs256();
    let token = issuer.issue("user-1").unwrap();
    assert_eq!(verifier.verify(&token).unwrap().sub, "user-1");
    let key = PrivateKey::generate();
    let token = eddsa_issuer("k1", &key).issue("user-2").unwrap();
    assert_eq!(jsonwebtoken::decode_header(&token).unwrap().alg, Algorithm::EdDSA);
    assert_eq!(TokenVerifier::new(&signing_settings("k1", &key)).verify(&token).unwrap().sub, "user-2");
}

#[test]
fn a_subject_is_checked_once_as_the_token_is_decoded() {
    let (issuer, verifier) = hs256();
    let header = jsonwebtoken::decode_header(issuer.issue("u").unwrap()).unwrap();
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    for bad in ["", "a\nb", "x\u{7f}", &"u".repeat(Subject::MAX_CHARS + 1)] {
        let mut claims = serde_json::to_value(claims(60)).unwrap();
        claims["sub"] = bad.into();
        let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        assert_eq!(verifier.verify(&token), Err(TokenError::Malformed), "subject {bad:?}");
    }
    assert!(issuer.issue("a\nb").is_err(), "nor is such a token issued");
    assert_eq!(
        verifier.verify(&issuer.issue(&"u".repeat(Subject::MAX_CHARS)).unwrap()).unwrap().sub.as_str().len(),
        128
    );
}

#[test]
fn refusals_carry_their_reason() {
    let (issuer, verifier) = hs256();
    let expired = issuer.sign(&claims(-3600)).unwrap();
    assert_eq!(verifier.verify(&expired), Err(TokenError::Expired));
    let future = Claims { nbf: Some(unix_now() + 3600), ..claims(7200) };
    assert_eq!(verifier.verify(&issuer.sign(&future).unwrap()), Err(TokenError::NotYetValid));
    let wrong_iss = Claims { iss: "evil".into(), ..claims(60) };
    assert_eq!(verifier.verify(&issuer.sign(&wrong_iss).unwrap()), Err(TokenError::WrongIssuer));
    let wrong_aud = Claims { aud: "other".into(), ..claims(60) };
    assert_eq!(verifier.verify(&issuer.sign(&wrong_aud).unwrap()), Err(TokenError::WrongAudience));

    let other_key =
        TokenIssuer::new(&JwtSettings::with_secret("another-secret-of-enough-length-1234"), Duration::from_secs(60))
            .unwrap();
    assert_eq!(verifier.verify(&other_key.issue("u").unwrap()), Err(TokenError::BadSignature));
    assert_eq!(verifier.verify("not.a.token"), Err(TokenError::Malformed));
}

#[test]
fn alg_none_and_unknown_kid_are_refused() {
    let (issuer, verifier) = hs256();
    let token = issuer.issue("u").unwrap();
    let payload = token.split('.').nth(1).unwrap();
    // {"alg":"none","typ":"JWT","kid":"primary"}
    let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIiwia2lkIjoicHJpbWFyeSJ9.{payload}.");
    assert!(verifier.verify(&none).is_err());
    let settings = JwtSettings::with_shared_key("other", SECRET);
    let other_kid = TokenIssuer::new(&settings, Duration::from_secs(60)).unwrap().issue("u").unwrap();
    assert_eq!(verifier.verify(&other_kid), Err(TokenError::UnknownKey));
}

#[test]
fn retired_keys_still_verify_during_rotation() {
    let old = JwtSettings::with_secret(SECRET);
    let token = TokenIssuer::new(&old, Duration::from_secs(60)).unwrap().issue("u").unwrap();
    let TokenKeys::Shared { active: old_key, .. } = old.keys else { unreachable!() };
    let rotated = JwtSettings::with_keys(TokenKeys::Shared {
        active: SharedKey {
            kid: "next".into(),
            secret: crate::config::Secret::new("the-new-secret-with-plenty-of-bytes-0987"),
        },
        retired: vec![old_key],
    });
    assert!(TokenVerifier::new(&rotated).verify(&token).is_ok());
}

#[test]
fn bearer_header_parsing() {
    assert_eq!(bearer_token(None), Err(TokenError::Missing));
    assert_eq!(bearer_token(Some(b"Basic abc")), Err(TokenError::Malformed));
    assert_eq!(bearer_token(Some(b"Bearer ")), Err(TokenError::Malformed));
    assert_eq!(bearer_token(Some(b"bearer abc.def.ghi")), Ok("abc.def.ghi"));
    let huge = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
    assert_eq!(bearer_token(Some(huge.as_bytes())), Err(TokenError::Malformed));
}

#[test]
fn the_issuer_publishes_its_public_keys_and_never_a_secret() {
    let key = PrivateKey::generate();
    let old = PrivateKey::generate().public_key();
    let settings = JwtSettings::with_keys(TokenKeys::Signing {
        kid: "new".into(),
        key: key.clone(),
        published: vec![PublishedKey { kid: "old".into(), key: old.clone() }],
    });
    let issuer = TokenIssuer::new(&settings, Duration::from_secs(60)).unwrap();
    assert_eq!(issuer.jwks().keys, vec![key.public_key().to_jwk("new"), old.to_jwk("old")]);
    assert!(hs256().0.jwks().keys.is_empty());
    let verifier_settings = JwtSettings::with_keys(TokenKeys::Jwks {
        url: "http://127.0.0.1:1/.well-known/jwks.json".into(),
        refresh: Duration::from_secs(60),
    });
    assert!(TokenIssuer::new(&verifier_settings, Duration::from_secs(60)).is_err());
}

/// A JWK Set served over HTTP on a free port; the test swaps the set and counts fetches.
struct JwksServer {
    url: String,
    set: Arc<Mutex<JwkSet>>,
    fetches: Arc<AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(keys: &[(&str, &PrivateKey)]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap());
        let set = Arc::new(Mutex::new(JwkSet::default()));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (Arc::clone(&set), Arc::clone(&fetches));
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (served, counted) = (Arc::clone(&served), Arc::clone(&counted));
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_request| {
                        counted.fetch_add(1, Ordering::SeqCst);
                        let body = serde_json::to_vec(&*served.lock().unwrap()).unwrap();
                        async move {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from(body),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let jwks = Self { url, set, fetches, server };
        jwks.publish(keys);
        jwks
    }

    fn publish(&self, keys: &[(&str, &PrivateKey)]) {
        *self.set.lock().unwrap() =
            JwkSet { keys: keys.iter().map(|(kid, key)| key.public_key().to_jwk(kid)).collect() };
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    fn verifier(&self, refresh: Duration) -> Arc<TokenVerifier> {
        let settings = JwtSettings::with_keys(TokenKeys::Jwks { url: self.url.clone(), refresh });
        let verifier = Arc::new(TokenVerifier::new(&settings));
        tokio::spawn(Arc::clone(&verifier).keep_keys_fresh());
        verifier
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn until_ready(verifier: &TokenVerifier) {
    for _ in 0..100 {
        if verifier.readiness().is_some_and(|r| r.state == BackendState::Up) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the JWK Set did not load: {:?}", verifier.readiness().map(|r| r.state));
}

#[tokio::test]
async fn a_verifier_accepts_only_eddsa_tokens_of_the_fetched_set() {
    let key = PrivateKey::generate();
    let jwks = JwksServer::start(&[("k1", &key)]).await;
    let verifier = jwks.verifier(Duration::from_secs(300));
    assert!(matches!(verifier.readiness().unwrap().state, BackendState::Down { .. }), "not ready before the set loads");
    until_ready(&verifier).await;
    let issuer = eddsa_issuer("k1", &key);
    assert_eq!(verifier.verify_fresh(&issuer.issue("alice").unwrap()).await.unwrap().sub, "alice");

    // Expired, and another key under the same kid.
    assert_eq!(verifier.verify(&issuer.sign(&claims(-3600)).unwrap()), Err(TokenError::Expired));
    let impostor = eddsa_issuer("k1", &PrivateKey::generate()).issue("alice").unwrap();
    assert_eq!(verifier.verify_fresh(&impostor).await, Err(TokenError::BadSignature));

    // Algorithm confusion: HS256 keyed with the public key (its JWK x, its raw bytes, its PEM).
    let public = key.public_key();
    let raw = URL_SAFE_NO_PAD.decode(public.x()).unwrap();
    for secret in [public.x().into_bytes(), raw, public.to_pem().into_bytes()] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let forged = jsonwebtoken::encode(&header, &claims(60), &EncodingKey::from_secret(&secret)).unwrap();
        assert_eq!(verifier.verify_fresh(&forged).await, Err(TokenError::WrongAlgorithm));
    }
    // Any HS256 token, whatever its key.
    let hs = TokenIssuer::new(&JwtSettings::with_secret(SECRET), Duration::from_secs(60)).unwrap();
    assert_eq!(verifier.verify_fresh(&hs.issue("alice").unwrap()).await, Err(TokenError::WrongAlgorithm));
    // alg: none, with the kid of the set.
    let payload = issuer.issue("alice").unwrap().split('.').nth(1).unwrap().to_owned();
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
    assert!(verifier.verify_fresh(&format!("{none_header}.{payload}.")).await.is_err());
}

#[tokio::test]
async fn an_unknown_kid_fetches_the_set_again_at_most_once_per_interval() {
    let old = PrivateKey::generate();
    let jwks = JwksServer::start(&[("old", &old)]).await;
    let verifier = jwks.verifier(Duration::from_secs(300));
    until_ready(&verifier).await;
    let at_start = jwks.fetches();

    // A rotation: the new key is published and used before the next refresh.
    let new = PrivateKey::generate();
    jwks.publish(&[("old", &old), ("new", &new)]);
    let token = eddsa_issuer("new", &new).issue("bob").unwrap();
    assert_eq!(verifier.verify_fresh(&token).await.unwrap().sub, "bob", "a new kid works without a restart");
    assert_eq!(jwks.fetches(), at_start + 1);

    // A flood of made-up kids: no further fetch within the interval.
    for n in 0..50 {
        let made_up = eddsa_issuer(&format!("made-up-{n}"), &PrivateKey::generate()).issue("x").unwrap();
        assert_eq!(verifier.verify_fresh(&made_up).await, Err(TokenError::UnknownKey));
    }
    assert_eq!(jwks.fetches(), at_start + 1, "made-up kids never fetch more than once per interval");
}

#[tokio::test]
async fn a_removed_key_is_refused_after_the_next_refresh_and_an_outage_keeps_the_keys() {
    let (old, new) = (PrivateKey::generate(), PrivateKey::generate());
    let jwks = JwksServer::start(&[("old", &old), ("new", &new)]).await;
    let verifier = jwks.verifier(Duration::from_secs(1));
    until_ready(&verifier).await;
    let old_token = eddsa_issuer("old", &old).issue("carol").unwrap();
    assert!(verifier.verify(&old_token).is_ok());
    let generation = verifier.generation();

    jwks.publish(&[("new", &new)]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(verifier.verify(&old_token), Err(TokenError::UnknownKey), "retired within one refresh interval");
    assert_ne!(verifier.generation(), generation, "a changed set is a new generation");

    // svc-users unreachable: the keys held stay, and the verifier says so.
    let new_token = eddsa_issuer("new", &new).issue("carol").unwrap();
    let url = jwks.url.clone();
    drop(jwks);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(verifier.verify(&new_token).is_ok());
    let report = verifier.readiness().unwrap();
    assert!(matches!(&report.state, BackendState::Degraded { detail } if detail.contains(&url)), "{:?}", report.state);
    let registry = prometheus::Registry::new();
    verifier.report_to(&registry);
    let text = prometheus::TextEncoder::new().encode_to_string(&registry.gather()).unwrap();
    assert!(text.contains("jwks_stale 1"), "{text}");
    assert!(text.contains("todo_dev_mode 0"), "{text}");
}
