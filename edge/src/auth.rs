//! The token check of protected routes, and the identity headers a client may never
//! smuggle to a service.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use ahash::RandomState;
use async_trait::async_trait;
use http::header::{HeaderMap, AUTHORIZATION, COOKIE};
use pingora::http::RequestHeader;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use todo_common::auth::{bearer_token, Subject, TokenError, TokenVerifier};

/// Client-sent headers that could pass for an identity established by the edge. The
/// services verify the token themselves, but nothing downstream should ever see these.
pub const IDENTITY_HEADERS: &[&str] = &[
    "x-user-id",
    "x-user",
    "x-user-email",
    "x-user-sub",
    "x-subject",
    "x-auth-user",
    "x-auth-subject",
    "x-authenticated-user",
    "x-authenticated-userid",
    "x-forwarded-user",
    "x-forwarded-email",
    "x-remote-user",
    "remote-user",
];

/// Tokens this process verified recently, so a client's next requests skip the HMAC,
/// the base64 and the JSON parsing. Keyed by the whole token (an exact match, so a
/// tampered token is never a hit); only successes are kept; an entry answers only while
/// `now < exp`, stricter than the verifier (which allows a leeway past `exp`), and only
/// while the verifier's keys are those it was verified with (its generation), so a token
/// of a retired key is refused from the first request after the key set changed. Bounded:
/// a full shard drops its expired entries, or all of them. Sharded locks, each held for
/// one lookup or insert.
pub struct VerifiedTokens {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
}

/// Verified tokens by their whole text. Hashed with aHash (keys random per process, so
/// collisions cannot be planned from outside), not SipHash: a token is a few hundred
/// bytes, hashed twice per request.
type Shard = HashMap<Box<str>, Verified, RandomState>;

struct Verified {
    subject: Subject,
    exp: u64,
    generation: u64,
}

const SHARDS: usize = 8;
const ENTRIES_PER_SHARD: usize = 512;
/// Longer tokens are verified every time; this bounds the cache at about 4 MiB.
const MAX_CACHED_TOKEN_BYTES: usize = 1024;

impl VerifiedTokens {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::with_hasher(RandomState::new()))).collect(),
            hasher: RandomState::new(),
        }
    }

    /// The token's subject: from the cache when this exact token was verified and has
    /// not expired, else from the full check.
    pub async fn subject(&self, verifier: &TokenVerifier, token: &str) -> Result<Subject, TokenError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let generation = verifier.generation();
        let shard = &self.shards[self.hasher.hash_one(token) as usize % SHARDS];
        if let Ok(entries) = shard.lock() {
            if let Some(hit) = entries.get(token).filter(|v| now < v.exp && v.generation == generation) {
                return Ok(hit.subject.clone());
            }
        }
        let claims = verifier.verify_fresh(token).await?;
        // Verified under the keys as they are now (an unknown kid may have fetched new ones).
        let generation = verifier.generation();
        if token.len() <= MAX_CACHED_TOKEN_BYTES && now < claims.exp {
            if let Ok(mut entries) = shard.lock() {
                if entries.len() >= ENTRIES_PER_SHARD {
                    entries.retain(|_, v| now < v.exp);
                    if entries.len() >= ENTRIES_PER_SHARD {
                        entries.clear();
                    }
                }
                entries.insert(token.into(), Verified { subject: claims.sub.clone(), exp: claims.exp, generation });
            }
        }
        Ok(claims.sub)
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map_or(0, |e| e.len())).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for VerifiedTokens {
    fn default() -> Self {
        Self::new()
    }
}

/// The subject of the request's bearer token, through the cache of verified tokens.
pub async fn authenticated_subject(
    verifier: &TokenVerifier,
    cache: &VerifiedTokens,
    req: &RequestHeader,
) -> Result<Subject, TokenError> {
    let token = bearer_token(req.headers.get(AUTHORIZATION).map(|v| v.as_bytes()))?;
    cache.subject(verifier, token).await
}

/// Marks the credentials a request carries as sensitive, so that no `Debug` print of the
/// request (Pingora's debug lines print whole headers, upstream requests included, which
/// are cloned from this one) shows them.
pub fn hide_credentials(req: &mut RequestHeader) {
    for name in [AUTHORIZATION, COOKIE] {
        if let Some(value) = req.headers.get(&name).filter(|v| !v.is_sensitive()) {
            let mut hidden = value.clone();
            hidden.set_sensitive(true);
            // Replacing a present header cannot fail.
            let _ = req.insert_header(name, hidden);
        }
    }
}

/// Keeps the verifier's JWK Set fresh (a no-op for fixed keys) until shutdown.
pub struct KeysRefresh {
    verifier: Arc<TokenVerifier>,
}

impl KeysRefresh {
    pub fn new(verifier: Arc<TokenVerifier>) -> Self {
        Self { verifier }
    }
}

#[async_trait]
impl BackgroundService for KeysRefresh {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        tokio::select! {
            _ = shutdown.changed() => {}
            _ = Arc::clone(&self.verifier).keep_keys_fresh() => {}
        }
    }
}

pub fn strip_identity_headers(headers: &mut HeaderMap) {
    // One pass over the headers present; the removals themselves are rare.
    if !headers.keys().any(|name| IDENTITY_HEADERS.contains(&name.as_str())) {
        return;
    }
    for name in IDENTITY_HEADERS {
        headers.remove(*name);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use todo_common::auth::{Claims, TokenIssuer};
    use todo_test_support::{jwt_settings, token_for};

    use super::*;

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    fn token_expiring_at(subject: &str, exp: u64) -> String {
        let settings = jwt_settings();
        let claims = Claims {
            sub: Subject::parse(subject).unwrap(),
            iat: now() - 60,
            exp,
            nbf: None,
            iss: settings.issuer.clone(),
            aud: settings.audience.clone(),
        };
        TokenIssuer::new(&settings, Duration::from_secs(60)).unwrap().sign(&claims).unwrap()
    }

    #[tokio::test]
    async fn a_verified_token_is_served_from_the_cache_and_a_tampered_one_is_still_refused() {
        let verifier = TokenVerifier::new(&jwt_settings());
        let cache = VerifiedTokens::new();
        let token = token_for("alice");
        assert_eq!(cache.subject(&verifier, &token).await.unwrap().as_str(), "alice");
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.subject(&verifier, &token).await.unwrap().as_str(), "alice");
        // A changed signature character (not the last one, whose low bits may be padding).
        let at = token.len() - 10;
        let swapped = if &token[at..at + 1] == "A" { "B" } else { "A" };
        let tampered = format!("{}{swapped}{}", &token[..at], &token[at + 1..]);
        assert!(cache.subject(&verifier, &tampered).await.is_err());
        assert!(cache.subject(&verifier, "not.a.token").await.is_err());
        assert_eq!(cache.len(), 1, "failures are never cached");
    }

    #[tokio::test]
    async fn a_token_past_exp_is_never_cached_though_the_leeway_still_accepts_it() {
        let verifier = TokenVerifier::new(&jwt_settings());
        let cache = VerifiedTokens::new();
        let token = token_expiring_at("bob", now() - 5);
        assert_eq!(cache.subject(&verifier, &token).await.unwrap(), "bob");
        assert!(cache.is_empty());
        let expired = token_expiring_at("bob", now() - 3600);
        assert_eq!(cache.subject(&verifier, &expired).await, Err(TokenError::Expired));
    }

    #[tokio::test]
    async fn the_cache_stays_bounded() {
        let verifier = TokenVerifier::new(&jwt_settings());
        let cache = VerifiedTokens::new();
        for i in 0..(SHARDS * ENTRIES_PER_SHARD + 500) {
            let token = token_expiring_at(&format!("user-{i}"), now() + 3600);
            assert_eq!(cache.subject(&verifier, &token).await.unwrap().as_str(), format!("user-{i}"));
        }
        assert!(cache.len() <= SHARDS * ENTRIES_PER_SHARD);
    }
}
