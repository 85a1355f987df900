//! Bearer tokens: the settings every process reads, the issuer svc-users signs with,
//! and the verifier the edge and the services share.
//!
//! EdDSA (Ed25519) is the default mode: only svc-users holds the private key, and
//! verifiers fetch its public keys as a JWK Set. HS256 with one shared secret stays for
//! compatibility. `exp`/`nbf` get a small leeway, `iss` and `aud` must match, and keys
//! are chosen by the token's `kid` so a key can be rotated without logging anyone out.

mod ed25519;
mod issuer;
mod settings;
mod verifier;

pub use ed25519::{Jwk, JwkSet, PrivateKey, PublicKey};
pub use issuer::TokenIssuer;
pub use settings::{
    JwtSettings, PublishedKey, Role, SharedKey, TokenKeys, DEV_MODE, ISSUER_VARS, JWT_AUDIENCE, JWT_ISSUER,
    JWT_JWKS_REFRESH_SECONDS, JWT_JWKS_URL, JWT_KID, JWT_PREVIOUS_KEYS, JWT_PREVIOUS_PUBLIC_KEYS, JWT_SECRET,
    JWT_SIGNING_KEY, VERIFIER_VARS,
};
pub use verifier::{TokenVerifier, UNKNOWN_KID_FETCH_INTERVAL};

use serde::{Deserialize, Serialize};

/// Who a verified token speaks for: its `sub`, the user's id. Checked once, as the token
/// is decoded (a token whose subject fails the check is malformed): not empty, at most
/// 128 characters, no control characters, since it goes into limit keys, log lines and
/// queries. Past verification, nothing checks it again.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subject(String);

impl Subject {
    pub const MAX_CHARS: usize = 128;

    pub fn parse(raw: &str) -> Option<Self> {
        let sane = !raw.is_empty() && raw.chars().count() <= Self::MAX_CHARS && !raw.chars().any(char::is_control);
        sane.then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Subject {
    type Error = &'static str;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw).ok_or("a subject is 1 to 128 characters, none of them control characters")
    }
}

impl From<Subject> for String {
    fn from(subject: Subject) -> Self {
        subject.0
    }
}

impl PartialEq<str> for Subject {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Subject {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The claims this system puts in, and requires of, every access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: Subject,
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

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

#[cfg(test)]
mod tests;
