//! Password guessing per account: after [`GUESSES`] failed logins for one e-mail within
//! [`PERIOD`], further logins for it are refused with 429 until `PERIOD` has passed since
//! the first failure, whatever address they come from; a successful login resets the
//! count. [`LoginThrottle`] holds the rule; the counts sit behind the [`LoginAttempts`]
//! seam, in Redis ([`RedisLoginAttempts`], shared by every replica) or in memory
//! ([`MemoryLoginAttempts`], the standalone mode's single process).
//!
//! Each attempt takes one of the account's guesses *before* the password is checked,
//! atomically, and a success gives them all back; so parallel guesses cannot slip
//! between a check and a count, and at most [`GUESSES`] passwords are ever tried per
//! period. The price: more than [`GUESSES`] logins of one account in flight at once are
//! refused beyond the fifth, right password or not (one user does not log in that way).
//!
//! Redis rather than MongoDB: taking a guess is one atomic script, the count expires by
//! itself with its period, and its `PTTL` is the `Retry-After`. Losing the counts (a
//! Redis restart) only forgets recent failures, as failing open does anyway.
//!
//! Accounts are keyed by a SHA-256 of the normalised e-mail, so the store holds no
//! address in clear (one can still test a known address against it), and an unknown
//! e-mail is counted exactly like a known one. The store failing (an error, or no answer
//! within [`REDIS_TIMEOUT`]) never fails a login: it is logged, counted and skipped.
//!
//! The rule's price, as with any per-account lock: anyone can lock an account for 15
//! minutes with 5 wrong passwords, from any address; the per-address limit at the edge
//! slows that down, it does not prevent it.

#[cfg(feature = "embedded")]
mod memory;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use prometheus::IntCounter;
use sha2::{Digest, Sha256};
use todo_common::health::BackendState;
use todo_common::redis::{cmd, RedisClient, RedisError, Script};

use crate::domain::Email;

#[cfg(feature = "embedded")]
pub use memory::MemoryLoginAttempts;

/// Failed logins allowed per account and period.
pub const GUESSES: u32 = 5;
/// Counted from an account's first failed login.
pub const PERIOD: Duration = Duration::from_secs(15 * 60);
/// Every Redis call gives up after this; the login then goes on unthrottled.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(200);

/// One account, as the store knows it: a SHA-256 of the normalised e-mail, in hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccountKey(String);

impl AccountKey {
    pub fn of(email: &Email) -> Self {
        let digest = Sha256::digest(email.as_ref().as_bytes());
        Self(digest.iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// What taking a guess found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// A guess was left and is now taken.
    Allowed,
    /// None left; the first failure's period ends in this long.
    Refused { retry_after: Duration },
}

#[derive(Debug, thiserror::Error)]
pub enum ThrottleError {
    #[error(transparent)]
    Redis(#[from] RedisError),
}

/// Where the counts live.
#[async_trait]
pub trait LoginAttempts: Send + Sync + 'static {
    /// Takes one of `guesses` for `account`, atomically; the count starts a `period`
    /// when it is first taken.
    async fn take(&self, account: &AccountKey, guesses: u32, period: Duration) -> Result<Attempt, ThrottleError>;
    /// Gives every guess back (after a successful login).
    async fn reset(&self, account: &AccountKey) -> Result<(), ThrottleError>;
    /// The backend's name in `/readyz`.
    fn backend_name(&self) -> &'static str;
    /// Never critical: down shows as degraded.
    async fn state(&self) -> BackendState;
}

/// The rule, on top of a [`LoginAttempts`] store.
pub struct LoginThrottle {
    attempts: Arc<dyn LoginAttempts>,
    store_failures: IntCounter,
}

impl LoginThrottle {
    pub fn new(attempts: Arc<dyn LoginAttempts>, store_failures: IntCounter) -> Self {
        Self { attempts, store_failures }
    }

    /// Before checking a password: `Some(retry after)` when this account has no guess left.
    pub async fn before_login(&self, email: &Email) -> Option<Duration> {
        match self.attempts.take(&AccountKey::of(email), GUESSES, PERIOD).await {
            Ok(Attempt::Allowed) => None,
            Ok(Attempt::Refused { retry_after }) => Some(retry_after),
            Err(error) => {
                self.unavailable(&error);
                None
            }
        }
    }

    /// After a successful login.
    pub async fn succeeded(&self, email: &Email) {
        if let Err(error) = self.attempts.reset(&AccountKey::of(email)).await {
            self.unavailable(&error);
        }
    }

    pub fn backend_name(&self) -> &'static str {
        self.attempts.backend_name()
    }

    pub async fn state(&self) -> BackendState {
        self.attempts.state().await
    }

    fn unavailable(&self, error: &ThrottleError) {
        self.store_failures.inc();
        tracing::warn!(%error, "login throttle unavailable; the login goes on unthrottled");
    }
}

/// KEYS[1]: the account's count. ARGV: guesses, period in ms. Returns `{1, 0}` when a
/// guess was taken, `{0, ms until the period ends}` when none is left.
const TAKE_SCRIPT: &str = r"
local taken = tonumber(redis.call('GET', KEYS[1]) or '0')
if taken >= tonumber(ARGV[1]) then
  local left = redis.call('PTTL', KEYS[1])
  if left < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    left = tonumber(ARGV[2])
  end
  return {0, left}
end
if redis.call('INCR', KEYS[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return {1, 0}
";

pub struct RedisLoginAttempts {
    redis: RedisClient,
    script: Script,
    /// `REDIS_KEY_PREFIX` + `login-attempts:`.
    prefix: String,
}

impl RedisLoginAttempts {
    /// Connects lazily: logins work, unthrottled, while Redis is down.
    pub fn new(url: &str, key_prefix: &str) -> anyhow::Result<Self> {
        Ok(Self {
            redis: RedisClient::new(url, "REDIS_URL", REDIS_TIMEOUT)?,
            script: Script::new(TAKE_SCRIPT),
            prefix: format!("{key_prefix}login-attempts:"),
        })
    }

    fn key(&self, account: &AccountKey) -> String {
        format!("{}{}", self.prefix, account.0)
    }
}

#[async_trait]
impl LoginAttempts for RedisLoginAttempts {
    async fn take(&self, account: &AccountKey, guesses: u32, period: Duration) -> Result<Attempt, ThrottleError> {
        let mut invocation = self.script.key(self.key(account));
        invocation.arg(guesses).arg(period.as_millis() as u64);
        let (taken, left_ms): (u8, u64) = self.redis.script(&invocation).await?;
        Ok(match taken {
            1 => Attempt::Allowed,
            _ => Attempt::Refused { retry_after: Duration::from_millis(left_ms) },
        })
    }

    async fn reset(&self, account: &AccountKey) -> Result<(), ThrottleError> {
        Ok(self.redis.query::<()>(cmd("DEL").arg(self.key(account))).await?)
    }

    fn backend_name(&self) -> &'static str {
        "redis"
    }

    async fn state(&self) -> BackendState {
        self.redis.readiness("logins are not throttled per account").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_are_keyed_by_a_hash_of_the_normalised_email() {
        let key = |raw: &str| AccountKey::of(&Email::parse(raw).unwrap());
        assert_eq!(key(" Alice@Example.com"), key("alice@example.com"));
        assert_ne!(key("alice@example.com"), key("bob@example.com"));
        assert_eq!(key("alice@example.com").0.len(), 64);
        assert!(!key("alice@example.com").0.contains("alice"));
    }
}
