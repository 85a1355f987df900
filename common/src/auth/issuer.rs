//! Signing access tokens: svc-users' side.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::ed25519::JwkSet;
use super::settings::{JwtSettings, TokenKeys};
use super::{unix_now, Claims, Subject};

/// Signs access tokens with the active key, and knows the public keys to publish.
pub struct TokenIssuer {
    key: EncodingKey,
    algorithm: Algorithm,
    kid: String,
    issuer: String,
    audience: String,
    ttl: Duration,
    published: JwkSet,
}

impl TokenIssuer {
    /// Fails for settings that hold no signing key (a verifier's JWK Set URL).
    pub fn new(settings: &JwtSettings, ttl: Duration) -> anyhow::Result<Self> {
        let (key, algorithm, kid, published) = match &settings.keys {
            TokenKeys::Shared { active, .. } => (
                EncodingKey::from_secret(active.secret.expose().as_bytes()),
                Algorithm::HS256,
                active.kid.clone(),
                // A shared secret is never published: the set is empty.
                JwkSet::default(),
            ),
            TokenKeys::Signing { kid, key, published } => {
                let keys = std::iter::once(key.public_key().to_jwk(kid))
                    .chain(published.iter().map(|p| p.key.to_jwk(&p.kid)))
                    .collect();
                (key.encoding_key(), Algorithm::EdDSA, kid.clone(), JwkSet { keys })
            }
            TokenKeys::Jwks { .. } => anyhow::bail!("a verifier's settings (JWT_JWKS_URL) cannot sign tokens"),
        };
        Ok(Self {
            key,
            algorithm,
            kid,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            ttl,
            published,
        })
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The public keys verifiers accept: the signing key's and those still published.
    pub fn jwks(&self) -> &JwkSet {
        &self.published
    }

    pub fn issue(&self, subject: &str) -> anyhow::Result<String> {
        let now = unix_now();
        let claims = Claims {
            sub: Subject::parse(subject).ok_or_else(|| anyhow::anyhow!("{subject:?} cannot be a token's subject"))?,
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
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.key)?)
    }
}
