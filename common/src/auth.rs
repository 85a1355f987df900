//! HS256 bearer tokens: the settings every process reads, the verifier the edge and
//! the services share, and the issuer `svc-users` signs with.
//!
//! The algorithm is pinned to HS256 (so `alg: none` and algorithm confusion are
//! refused), `exp`/`nbf` get a small leeway, `iss` and `aud` must match, and keys are
//! chosen by the token's `kid` so a key can be rotated without logging everyone out.

use std::collections::HashMap;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{EnvReader, Secret, Var};

pub const JWT_SECRET: Var =
    Var::optional("JWT_SECRET", "HS256 signing key, its bytes as given, at least 32; required unless TODO_DEV_MODE=1");
pub const JWT_KID: Var = Var::new("JWT_KID", "primary", "key id of JWT_SECRET, sent as the token's kid");
pub const JWT_PREVIOUS_KEYS: Var = Var::optional(
    "JWT_PREVIOUS_KEYS",
    "retired keys still accepted during a rotation, as kid=secret pairs separated by commas",
);
pub const JWT_ISSUER: Var = Var::new("JWT_ISSUER", "todo-users", "the tokens' iss claim");
pub const JWT_AUDIENCE: Var = Var::new("JWT_AUDIENCE", "todo-api", "the tokens' aud claim");
pub const DEV_MODE: Var = Var::new(
    "TODO_DEV_MODE",
    "0",
    "1 allows a missing JWT_SECRET (a fixed, publicly known development key is used); never in production",
);

pub const VARS: &[Var] = &[JWT_SECRET, JWT_KID, JWT_PREVIOUS_KEYS, JWT_ISSUER, JWT_AUDIENCE, DEV_MODE];

/// Publicly known, so only ever used when TODO_DEV_MODE=1 says so.
const DEV_SECRET: &str = "todo-dev-mode-only-secret-do-not-use-in-production";
const MIN_SECRET_BYTES: usize = 32;
const LEEWAY_SECONDS: u64 = 30;

#[derive(Debug, Clone)]
pub struct SigningKey {
    pub kid: String,
    pub secret: Secret,
}

/// Token settings shared by the issuer and every verifier.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// The key new tokens are signed with.
    pub active: SigningKey,
    /// Keys still accepted for verification.
    pub retired: Vec<SigningKey>,
    pub issuer: String,
    pub audience: String,
}

impl JwtSettings {
    pub fn from_env(reader: &mut EnvReader<'_>) -> Self {
        let dev_mode = reader.flag(&DEV_MODE);
        let kid = reader.string(&JWT_KID);
        let secret = match reader.raw(&JWT_SECRET) {
            Some(secret) => secret,
            None if dev_mode => {
                tracing::warn!("JWT_SECRET unset: using the public development key (TODO_DEV_MODE=1)");
                DEV_SECRET.to_owned()
            }
            None => {
                reader.problem("JWT_SECRET is required (or set TODO_DEV_MODE=1 for development)".into());
                DEV_SECRET.to_owned()
            }
        };
        if let Err(why) = check_strength(&secret) {
            reader.problem(format!("JWT_SECRET {why}"));
        }
        let mut retired = Vec::new();
        for pair in reader.raw(&JWT_PREVIOUS_KEYS).iter().flat_map(|v| v.split(',')) {
            match pair.trim().split_once('=') {
                Some((kid, secret)) if !kid.is_empty() => {
                    if let Err(why) = check_strength(secret) {
                        reader.problem(format!("JWT_PREVIOUS_KEYS key {kid:?} {why}"));
                    }
                    retired.push(SigningKey { kid: kid.to_owned(), secret: Secret::new(secret) });
                }
                _ => reader.problem("JWT_PREVIOUS_KEYS must be kid=secret pairs separated by commas".into()),
            }
        }
        Self {
            active: SigningKey { kid, secret: Secret::new(secret) },
            retired,
            issuer: reader.string(&JWT_ISSUER),
            audience: reader.string(&JWT_AUDIENCE),
        }
    }

    /// Settings for tests and tools: one key, default issuer and audience.
    pub fn with_secret(secret: &str) -> Self {
        Self {
            active: SigningKey { kid: "primary".into(), secret: Secret::new(secret) },
            retired: Vec::new(),
            issuer: "todo-users".into(),
            audience: "todo-api".into(),
        }
    }
}

/// A key is weak when short or built from very few distinct bytes ("aaaa…").
fn check_strength(secret: &str) -> Result<(), String> {
    let bytes = secret.as_bytes();
    if bytes.len() < MIN_SECRET_BYTES {
        return Err(format!("is too short: {} bytes, at least {MIN_SECRET_BYTES} needed", bytes.len()));
    }
    let mut distinct: Vec<u8> = bytes.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 8 {
        return Err("is too weak: it repeats too few distinct characters".into());
    }
    Ok(())
}

/// The claims this system puts in, and requires of, every access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub iat: u64,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    pub iss: String,
    pub aud: String,
}

/// Why a token was refused; `reason()` labels the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no bearer token was sent")]
    Missing,
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's algorithm is not accepted")]
    WrongAlgorithm,
    #[error("the token's key id is unknown")]
    UnknownKey,
    #[error("the token's signature is invalid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's issuer is not accepted")]
    WrongIssuer,
    #[error("the token's audience is not accepted")]
    WrongAudience,
}

impl TokenError {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::WrongAlgorithm => "algorithm",
            Self::UnknownKey => "unknown_kid",
            Self::BadSignature => "signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "issuer",
            Self::WrongAudience => "audience",
        }
    }
}

/// Bearer tokens longer than this are refused before any parsing.
const MAX_TOKEN_BYTES: usize = 4096;

/// The token from an `Authorization: Bearer …` header value.
pub fn bearer_token(authorization: Option<&[u8]>) -> Result<&str, TokenError> {
    let value = authorization.ok_or(TokenError::Missing)?;
    let value = std::str::from_utf8(value).map_err(|_| TokenError::Malformed)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(TokenError::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed);
    }
    Ok(token)
}

/// Verifies access tokens against every accepted key.
pub struct TokenVerifier {
    keys: HashMap<String, DecodingKey>,
    validation: Validation,
}

impl TokenVerifier {
    pub fn new(settings: &JwtSettings) -> Self {
        let keys = std::iter::once(&settings.active)
            .chain(&settings.retired)
            .map(|k| (k.kid.clone(), DecodingKey::from_secret(k.secret.expose().as_bytes())))
            .collect();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        Self { keys, validation }
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::HS256 {
            return Err(TokenError::WrongAlgorithm);
        }
        let kid = header.kid.as_deref().ok_or(TokenError::UnknownKey)?;
        let key = self.keys.get(kid).ok_or(TokenError::UnknownKey)?;
        jsonwebtoken::decode::<Claims>(token, key, &self.validation).map(|data| data.claims).map_err(|e| {
            match e.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                ErrorKind::InvalidAudience => TokenError::WrongAudience,
                ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm,
                _ => TokenError::Malformed,
            }
        })
    }
}

/// Signs access tokens with the active key.
pub struct TokenIssuer {
    key: EncodingKey,
    kid: String,
    issuer: String,
    audience: String,
    ttl: Duration,
}

impl TokenIssuer {
    pub fn new(settings: &JwtSettings, ttl: Duration) -> Self {
        Self {
            key: EncodingKey::from_secret(settings.active.secret.expose().as_bytes()),
            kid: settings.active.kid.clone(),
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn issue(&self, subject: &str) -> anyhow::Result<String> {
        let now = unix_now();
        let claims = Claims {
            sub: subject.to_owned(),
            iat: now,
            exp: now + self.ttl.as_secs(),
            nbf: None,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        self.sign(&claims)
    }

    /// Signs arbitrary claims; tests use it to mint expired or odd tokens.
    pub fn sign(&self, claims: &Claims) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.key)?)
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const SECRET: &str = "0123456789abcdefghijklmnopqrstuvwxyz";

    fn issuer_and_verifier() -> (TokenIssuer, TokenVerifier) {
        let settings = JwtSettings::with_secret(SECRET);
        (TokenIssuer::new(&settings, Duration::from_secs(60)), TokenVerifier::new(&settings))
    }

    fn claims(exp_offset: i64) -> Claims {
        let now = unix_now();
        Claims {
            sub: "u1".into(),
            iat: now,
            exp: (now as i64 + exp_offset) as u64,
            nbf: None,
            iss: "todo-users".into(),
            aud: "todo-api".into(),
        }
    }

    #[test]
    fn issued_tokens_verify() {
        let (issuer, verifier) = issuer_and_verifier();
        let token = issuer.issue("user-1").unwrap();
        assert_eq!(verifier.verify(&token).unwrap().sub, "user-1");
    }

    #[test]
    fn refusals_carry_their_reason() {
        let (issuer, verifier) = issuer_and_verifier();
        let expired = issuer.sign(&claims(-3600)).unwrap();
        assert_eq!(verifier.verify(&expired), Err(TokenError::Expired));
        let future = Claims { nbf: Some(unix_now() + 3600), ..claims(7200) };
        assert_eq!(verifier.verify(&issuer.sign(&future).unwrap()), Err(TokenError::NotYetValid));
        let wrong_iss = Claims { iss: "evil".into(), ..claims(60) };
        assert_eq!(verifier.verify(&issuer.sign(&wrong_iss).unwrap()), Err(TokenError::WrongIssuer));
        let wrong_aud = Claims { aud: "other".into(), ..claims(60) };
        assert_eq!(verifier.verify(&issuer.sign(&wrong_aud).unwrap()), Err(TokenError::WrongAudience));

        let other_key = TokenIssuer::new(
            &JwtSettings::with_secret("another-secret-of-enough-length-1234"),
            Duration::from_secs(60),
        );
        assert_eq!(verifier.verify(&other_key.issue("u").unwrap()), Err(TokenError::BadSignature));
        assert_eq!(verifier.verify("not.a.token"), Err(TokenError::Malformed));
    }

    #[test]
    fn alg_none_and_unknown_kid_are_refused() {
        let (issuer, verifier) = issuer_and_verifier();
        let token = issuer.issue("u").unwrap();
        let payload = token.split('.').nth(1).unwrap();
        // {"alg":"none","typ":"JWT","kid":"primary"}
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIiwia2lkIjoicHJpbWFyeSJ9.{payload}.");
        assert!(verifier.verify(&none).is_err());
        let mut settings = JwtSettings::with_secret(SECRET);
        settings.active.kid = "other".into();
        let other_kid = TokenIssuer::new(&settings, Duration::from_secs(60)).issue("u").unwrap();
        assert_eq!(verifier.verify(&other_kid), Err(TokenError::UnknownKey));
    }

    #[test]
    fn retired_keys_still_verify_during_rotation() {
        let old = JwtSettings::with_secret(SECRET);
        let token = TokenIssuer::new(&old, Duration::from_secs(60)).issue("u").unwrap();
        let mut rotated = JwtSettings::with_secret("the-new-secret-with-plenty-of-bytes-0987");
        rotated.active.kid = "next".into();
        rotated.retired.push(old.active.clone());
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
    fn missing_or_weak_secret_is_refused_outside_dev_mode() {
        let read = |pairs: &[(&str, &str)]| {
            let env: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let mut reader = EnvReader::new(&env);
            JwtSettings::from_env(&mut reader);
            reader.finish(())
        };
        assert!(read(&[]).is_err());
        assert!(read(&[("JWT_SECRET", "short")]).is_err());
        assert!(read(&[("JWT_SECRET", &"a".repeat(40))]).is_err());
        assert!(read(&[("JWT_SECRET", SECRET)]).is_ok());
        assert!(read(&[("TODO_DEV_MODE", "1")]).is_ok());
    }
}
