//! Counters in this process, on `pingora_limits::Rate`: with N edge replicas a client
//! gets up to N times the budget. A window's count is the `Rate`'s current plus previous
//! slot for the key `(client key, window number)`, since a `Rate` slot boundary may fall
//! inside our window.

use pingora_limits::rate::Rate;

use super::{Decision, Window};
use crate::policy::LimitSpec;

/// Count-min sketch size per slot: more columns mean fewer collisions (which can only
/// over-count). 4 x 8192 counters x 2 slots = 512 KiB per limit policy.
const HASHES: usize = 4;
const SLOTS: usize = 8192;

/// The per-process counters of one limit table.
pub struct LocalCounter {
    limit: u32,
    rate: Rate,
}

impl LocalCounter {
    pub fn new(spec: &LimitSpec) -> Self {
        Self { limit: spec.requests, rate: Rate::new_with_estimator_config(spec.window, HASHES, SLOTS) }
    }

    /// Counts one request for `key` in `window`.
    pub fn check(&self, key: &str, window: Window) -> Decision {
        let bucket = (key, window.number);
        let current = self.rate.observe(&bucket, 1).max(0) as u64;
        let previous = self.rate.rate_with(&bucket, |c| c.prev_samples).max(0) as u64;
        let count = current + previous;
        Decision {
            allowed: count <= u64::from(self.limit),
            limit: self.limit,
            remaining: u64::from(self.limit).saturating_sub(count) as u32,
            reset_seconds: window.reset_seconds(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::policy::{LimitKey, LimitStore};

    struct Limiter {
        counter: LocalCounter,
        window: Duration,
    }

    impl Limiter {
        fn check_at(&self, key: &str, since_epoch: Duration) -> Decision {
            self.counter.check(key, Window::at(since_epoch, self.window))
        }
    }

    fn limiter(requests: u32, window_seconds: u64) -> Limiter {
        let window = Duration::from_secs(window_seconds);
        let spec = LimitSpec { requests, window, key: LimitKey::ClientIp, store: LimitStore::Local };
        Limiter { counter: LocalCounter::new(&spec), window }
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
