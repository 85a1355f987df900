//! Password hashing on the blocking pool.
//!
//! bcrypt reads only the first 72 bytes of its input, so two long passwords sharing
//! those bytes would be equal. We hash the password with SHA-256 first and feed bcrypt
//! the base64 digest (44 bytes, no NUL), so every byte of the password counts.

use std::sync::Arc;

use base64::Engine;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::domain::Password;

/// Hashes and verifies passwords, at most `parallelism` at a time, off the runtime.
#[derive(Clone)]
pub struct PasswordHasher {
    cost: u32,
    /// Bounds the blocking pool's bcrypt work so a login flood queues instead of
    /// spawning hundreds of threads.
    permits: Arc<Semaphore>,
    /// Verified against when the e-mail is unknown, so both failures take as long.
    dummy_hash: Arc<str>,
}

impl PasswordHasher {
    pub async fn new(cost: u32) -> anyhow::Result<Self> {
        let parallelism = std::thread::available_parallelism().map_or(2, |n| n.get());
        let dummy_hash = blocking(move || bcrypt::hash(prehash("not-a-real-password"), cost)).await??;
        Ok(Self { cost, permits: Arc::new(Semaphore::new(parallelism)), dummy_hash: dummy_hash.into() })
    }

    pub async fn hash(&self, password: &Password) -> anyhow::Result<String> {
        let _permit = self.permits.acquire().await?;
        let (input, cost) = (prehash(password.as_ref()), self.cost);
        Ok(blocking(move || bcrypt::hash(input, cost)).await??)
    }

    /// True when `password` matches `stored`; with no stored hash, checks a dummy one
    /// and answers false in about the same time.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> anyhow::Result<bool> {
        let _permit = self.permits.acquire().await?;
        let known = stored.is_some();
        let hash = stored.map_or_else(|| self.dummy_hash.to_string(), str::to_owned);
        let input = prehash(password);
        let matches = blocking(move || bcrypt::verify(input, &hash)).await??;
        Ok(known && matches)
    }
}

fn prehash(password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(password.as_bytes()))
}

/// Runs CPU-heavy work on the blocking pool, keeping the caller's span.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
    let span = tracing::Span::current();
    Ok(tokio::task::spawn_blocking(move || span.in_scope(work)).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_differing_after_byte_72_are_different() {
        let hasher = PasswordHasher::new(4).await.unwrap();
        let base = "x".repeat(80);
        let stored = hasher.hash(&Password::parse(format!("{base}A")).unwrap()).await.unwrap();
        assert!(hasher.verify(&format!("{base}A"), Some(&stored)).await.unwrap());
        assert!(!hasher.verify(&format!("{base}B"), Some(&stored)).await.unwrap());
    }

    #[tokio::test]
    async fn unknown_user_never_verifies() {
        let hasher = PasswordHasher::new(4).await.unwrap();
        assert!(!hasher.verify("not-a-real-password", None).await.unwrap());
    }
}
