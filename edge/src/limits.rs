//! Fixed-window rate limits on top of `pingora_limits::Rate`.
//!
//! Windows are aligned to the Unix epoch (a 60 s window resets at every full minute), so
//! `RateLimit-Reset` and `Retry-After` are exact and the same on every replica. Counters
//! live in this process only: with N edge replicas a client gets up to N times the budget.
//! A window's count is the `Rate`'s current plus previous slot for the key
//! `(client key, window number)`, since a `Rate` slot boundary may fall inside our window.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pingora_limits::rate::Rate;

use crate::policy::LimitSpec;

/// Count-min sketch size per slot: more columns mean fewer collisions (which can only
/// over-count). 4 x 8192 counters x 2 slots = 512 KiB per limit policy.
const HASHES: usize = 4;
const SLOTS: usize = 8192;

/// The counters of one limit policy; every route naming it shares the budget.
pub struct Limiter {
    spec: LimitSpec,
    rate: Rate,
}

/// What a limited request learns about its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the window ends, at least 1.
    pub reset_seconds: u64,
}

impl Limiter {
    pub fn new(spec: LimitSpec) -> Self {
        let rate = Rate::new_with_estimator_config(spec.window, HASHES, SLOTS);
        Self { spec, rate }
    }

    pub fn spec(&self) -> &LimitSpec {
        &self.spec
    }

    /// Counts one request for `key` and says whether it fits the budget.
    pub fn check(&self, key: &str) -> Decision {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        self.check_at(key, now)
    }

    fn check_at(&self, key: &str, since_epoch: Duration) -> Decision {
        let window_ms = (self.spec.window.as_millis() as u64).max(1);
        let now_ms = since_epoch.as_millis() as u64;
        let window_number = now_ms / window_ms;
        let bucket = (key, window_number);
        let current = self.rate.observe(&bucket, 1).max(0) as u64;
        let previous = self.rate.rate_with(&bucket, |c| c.prev_samples).max(0) as u64;
        let count = current + previous;
        let limit = self.spec.requests;
        let left_ms = window_ms - now_ms % window_ms;
        Decision {
            allowed: count <= u64::from(limit),
            limit,
            remaining: u64::from(limit).saturating_sub(count) as u32,
            reset_seconds: left_ms.div_ceil(1000).max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::LimitKey;

    fn limiter(requests: u32, window_seconds: u64) -> Limiter {
        Limiter::new(LimitSpec { requests, window: Duration::from_secs(window_seconds), key: LimitKey::ClientIp })
    }

    #[test]
    fn counts_down_then_refuses_with_time_to_window_end() {
        let limiter = limiter(3, 60);
        let at = Duration::from_secs(6_000_000 + 15); // 15 s into a minute
        let decisions: Vec<Decision> = (0..4).map(|_| limiter.check_at("1.2.3.4", at)).collect();
        assert_eq!(decisions.iter().map(|d| d.remaining).collect::<Vec<_>>(), vec![2, 1, 0, 0]);
        assert!(decisions[..3].iter().all(|d| d.allowed));
        assert!(!decisions[3].allowed);
        assert_eq!(decisions[3].reset_seconds, 45);
    }

    #[test]
    fn keys_have_separate_budgets() {
        let limiter = limiter(1, 60);
        let at = Duration::from_secs(6_000_000);
        assert!(limiter.check_at("alice", at).allowed);
        assert!(!limiter.check_at("alice", at).allowed);
        assert!(limiter.check_at("bob", at).allowed);
    }

    #[test]
    fn a_new_window_starts_a_new_budget() {
        let limiter = limiter(1, 60);
        assert!(limiter.check_at("k", Duration::from_secs(6_000_000)).allowed);
        assert!(!limiter.check_at("k", Duration::from_secs(6_000_059)).allowed);
        assert!(limiter.check_at("k", Duration::from_secs(6_000_060)).allowed);
    }

    #[test]
    fn reset_is_never_below_one_second() {
        let limiter = limiter(1, 1);
        let d = limiter.check_at("k", Duration::from_millis(6_000_000_999));
        assert_eq!(d.reset_seconds, 1);
    }
}
