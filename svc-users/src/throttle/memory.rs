//! The counts in this process, for the standalone mode (one process, so nothing to
//! share). Bounded: when full, expired counts are swept; if it is still full, new
//! accounts go unthrottled (and it is logged) rather than the map growing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use todo_common::health::BackendState;

use super::{AccountKey, Attempt, LoginAttempts, ThrottleError};

const MAX_ACCOUNTS: usize = 100_000;

struct Count {
    taken: u32,
    ends: Instant,
}

#[derive(Default)]
pub struct MemoryLoginAttempts {
    counts: Mutex<HashMap<AccountKey, Count>>,
}

impl MemoryLoginAttempts {
    pub fn new() -> Self {
        Self::default()
    }

    fn take_at(&self, account: &AccountKey, guesses: u32, period: Duration, now: Instant) -> Attempt {
        let mut counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = counts.get_mut(account).filter(|count| count.ends > now) {
            if count.taken >= guesses {
                return Attempt::Refused { retry_after: count.ends - now };
            }
            count.taken += 1;
            return Attempt::Allowed;
        }
        if counts.len() >= MAX_ACCOUNTS && !counts.contains_key(account) {
            counts.retain(|_, count| count.ends > now);
            if counts.len() >= MAX_ACCOUNTS {
                tracing::warn!("too many accounts with failed logins; this one goes unthrottled");
                return Attempt::Allowed;
            }
        }
        counts.insert(account.clone(), Count { taken: 1, ends: now + period });
        Attempt::Allowed
    }
}

#[async_trait]
impl LoginAttempts for MemoryLoginAttempts {
    async fn take(&self, account: &AccountKey, guesses: u32, period: Duration) -> Result<Attempt, ThrottleError> {
        Ok(self.take_at(account, guesses, period, Instant::now()))
    }

    async fn reset(&self, account: &AccountKey) -> Result<(), ThrottleError> {
        self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(account);
        Ok(())
    }

    fn backend_name(&self) -> &'static str {
        "login-attempts"
    }

    async fn state(&self) -> BackendState {
        BackendState::Up
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Email;

    #[test]
    fn guesses_run_out_and_come_back_when_the_period_ends() {
        let attempts = MemoryLoginAttempts::new();
        let account = AccountKey::of(&Email::parse("alice@example.com").unwrap());
        let period = Duration::from_secs(900);
        let start = Instant::now();
        for _ in 0..5 {
            assert_eq!(attempts.take_at(&account, 5, period, start), Attempt::Allowed);
        }
        let later = start + Duration::from_secs(100);
        assert_eq!(
            attempts.take_at(&account, 5, period, later),
            Attempt::Refused { retry_after: Duration::from_secs(800) },
            "counted from the first failure"
        );
        assert_eq!(attempts.take_at(&account, 5, period, start + period), Attempt::Allowed);
    }
}
