//! Capped exponential backoff with jitter, for reconnecting to a backend and for retrying
//! a store: the waits double up to a cap, and each is shortened by a random share of up to
//! half, so replicas that lost the same backend at the same moment do not retry in step.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    /// The next wait before its jitter.
    nominal: Duration,
}

impl Backoff {
    /// Waits from `first`, doubling on every call to [`Backoff::next_delay`] up to `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        let first = first.min(max);
        Self { first, max, nominal: first }
    }

    /// The next wait: between half the nominal delay and all of it ("equal jitter").
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.nominal;
        self.nominal = (self.nominal * 2).min(self.max);
        let half = nominal / 2;
        half + half.mul_f64(rand::random::<f64>())
    }

    /// After a success, the next failure starts from the shortest delay again.
    pub fn reset(&mut self) {
        self.nominal = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(delay: Duration, nominal_ms: u64) -> bool {
        let ms = delay.as_secs_f64() * 1000.0;
        ms >= nominal_ms as f64 / 2.0 && ms <= nominal_ms as f64
    }

    #[test]
    fn doubles_up_to_the_cap_with_jitter_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
        for nominal in [500, 1000, 2000, 4000, 8000, 10_000, 10_000, 10_000] {
            let delay = backoff.next_delay();
            assert!(within(delay, nominal), "{delay:?} for a nominal {nominal} ms");
        }
        backoff.reset();
        assert!(within(backoff.next_delay(), 500));
    }

    #[test]
    fn two_replicas_do_not_wait_in_step() {
        let waits = |_| {
            let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
            (0..8).map(|_| backoff.next_delay()).collect::<Vec<_>>()
        };
        assert_ne!(waits(1), waits(2));
    }
}
