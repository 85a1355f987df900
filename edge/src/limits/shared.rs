//! One budget per key and window across every edge replica, kept in Redis
//! (`store = "redis"`).
//!
//! Asking Redis on every request is exact but puts a round trip on every request;
//! syncing counts every few hundred milliseconds is cheap but lets replicas overshoot in
//! between. Instead each replica *leases* a batch of the budget with one atomic script
//! (the window's count in Redis only grows, and never past `requests`) and hands the
//! batch out locally, so no more than `requests` are ever accepted per window:
//! - the batch doubles while leases run out quickly (a busy key) and halves while they
//!   last long, and never exceeds 1/128 of the limit: limits under 256 lease one request
//!   at a time and stay exact, and what replicas hold unused when a window ends stays a
//!   small share of it (with demand well over the limit, replicas use up their leases);
//! - keys are aligned to the window (`…:{window number}:{key}`), so replicas agree on
//!   windows without talking to each other, and each key expires with its window: a
//!   replica that dies loses its unused lease only until then;
//! - a key Redis reports as used up is refused here for the rest of the window, without
//!   asking again.
//!
//! Redis failing (an error, or no answer within [`REDIS_TIMEOUT`]) sends the table to its
//! local counters, counts the failure and shows `degraded` in `/readyz`. One request a
//! second tries Redis again, and the shared budget is back as soon as it answers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use prometheus::IntCounter;
use todo_common::health::BackendState;
use todo_common::redis::{RedisClient, Script};

use super::{Decision, Window};
use crate::metrics::EdgeMetrics;
use crate::policy::LimitSpec;

/// Longest a request waits for a lease.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(100);
/// After a failure, how long requests count locally before one tries Redis again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);
/// Every key the edge writes starts with this, so it can share a Redis with svc-tasks.
pub const KEY_PREFIX: &str = "edge:ratelimit:";
/// A lease is at most this share of the limit.
const MAX_BATCH_DIVISOR: u32 = 128;
/// A lease used up sooner than this doubles the next one...
const GROW_WITHIN: Duration = Duration::from_millis(200);
/// ...and one that lasted longer than this halves it.
const SHRINK_AFTER: Duration = Duration::from_secs(2);
/// Keys with leases kept per table; beyond it, new keys count locally until older
/// windows are swept (a flood of addresses cannot grow the map without bound).
const MAX_KEYS: usize = 50_000;
/// Keys outlive their window by this much, for replicas whose clocks are a little behind.
const KEY_SLACK_MS: u64 = 5_000;

/// KEYS[1]: one key's count for one window. ARGV: the batch wanted, the limit, the
/// key's time to live in ms. Grants what is left, up to the batch, and returns
/// `{granted, leased in this window so far}`.
const LEASE_SCRIPT: &str = r"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local grant = math.min(tonumber(ARGV[1]), tonumber(ARGV[2]) - used)
if grant <= 0 then
  return {0, used}
end
used = redis.call('INCRBY', KEYS[1], grant)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {grant, used}
";

/// The process's connection to the shared store, used by every redis table.
pub struct SharedStore {
    redis: RedisClient,
    script: Script,
    /// The Redis client's own runtime: its connection task must not live on whichever
    /// Pingora worker happened to use it first, nor on the start-up runtime.
    runtime: Option<tokio::runtime::Runtime>,
    /// 0 while Redis answers; otherwise when (ms since the epoch) one request may try again.
    retry_at_ms: AtomicU64,
    /// Bumped on every failure, so requests queued behind a failed call do not repeat it.
    failure_count: AtomicU64,
    last_error: Mutex<String>,
    failures: IntCounter,
    leases: IntCounter,
}

impl SharedStore {
    pub fn new(url: &str, metrics: &EdgeMetrics) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("edge-redis")
            .enable_all()
            .build()
            .context("the Redis client's runtime")?;
        let redis = {
            let _entered = runtime.enter();
            RedisClient::new(url, "EDGE_REDIS_URL", REDIS_TIMEOUT)?
        };
        Ok(Self {
            redis,
            script: Script::new(LEASE_SCRIPT),
            runtime: Some(runtime),
            retry_at_ms: AtomicU64::new(0),
            failure_count: AtomicU64::new(0),
            last_error: Mutex::new(String::new()),
            failures: metrics.limit_store_failures(),
            leases: metrics.limit_store_leases(),
        })
    }

    /// For `/readyz`; never makes the edge unready.
    pub fn state(&self) -> BackendState {
        if self.retry_at_ms.load(Ordering::Acquire) == 0 {
            return BackendState::Up;
        }
        let error = self.last_error.lock().unwrap_or_else(PoisonError::into_inner).clone();
        BackendState::Degraded { detail: format!("{error}; shared rate limits count per replica") }
    }

    /// Always while Redis answers; after a failure, for one request per retry interval.
    fn may_call(&self) -> bool {
        let retry_at = self.retry_at_ms.load(Ordering::Acquire);
        if retry_at == 0 {
            return true;
        }
        let now = now_ms();
        now >= retry_at
            && self
                .retry_at_ms
                .compare_exchange(
                    retry_at,
                    now + RETRY_AFTER_FAILURE.as_millis() as u64,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    /// Leases up to `want` of `limit` for `key`: `Some((granted, leased so far))`, or
    /// `None` when Redis failed (recorded).
    async fn lease(&self, key: String, want: u32, limit: u32, ttl_ms: u64) -> Option<(u32, u64)> {
        let runtime = self.runtime.as_ref()?;
        let redis = self.redis.clone();
        let script = self.script.clone();
        let call = runtime.spawn(async move {
            let mut invocation = script.key(key);
            invocation.arg(want).arg(limit).arg(ttl_ms);
            redis.script::<(u32, u64)>(&invocation).await
        });
        let outcome = match call.await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(e) => Err(format!("the Redis call failed: {e}")),
        };
        match outcome {
            Ok(lease) => {
                self.leases.inc();
                if self.retry_at_ms.swap(0, Ordering::AcqRel) != 0 {
                    tracing::info!("rate-limit store answers again; shared limits are back");
                }
                Some(lease)
            }
            Err(error) => {
                self.failures.inc();
                self.failure_count.fetch_add(1, Ordering::AcqRel);
                let retry_at = now_ms() + RETRY_AFTER_FAILURE.as_millis() as u64;
                if self.retry_at_ms.swap(retry_at, Ordering::AcqRel) == 0 {
                    tracing::warn!(%error, "rate-limit store unreachable; shared limits count per replica");
                }
                *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = error;
                None
            }
        }
    }
}

impl Drop for SharedStore {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which an async context forbids.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The largest lease for a limit.
fn max_batch(limit: u32) -> u32 {
    (limit / MAX_BATCH_DIVISOR).max(1)
}

/// One redis table's leases, per key.
pub struct SharedCounter {
    store: Arc<SharedStore>,
    /// `edge:ratelimit:{table}:{requests}:{window seconds}:`: a changed table starts afresh,
    /// and replicas on different versions of it during a rollout do not mix budgets.
    prefix: String,
    limit: u32,
    max_batch: u32,
    leases: Mutex<HashMap<String, Arc<KeyLease>>>,
}

impl SharedCounter {
    pub fn new(store: Arc<SharedStore>, table: &str, spec: &LimitSpec) -> Self {
        let prefix = format!("{KEY_PREFIX}{table}:{}:{}:", spec.requests, spec.window.as_secs());
        Self {
            store,
            prefix,
            limit: spec.requests,
            max_batch: max_batch(spec.requests),
            leases: Mutex::new(HashMap::new()),
        }
    }

    /// The shared decision, or `None` when it cannot be had (Redis failing, or too many
    /// keys): the caller then counts locally.
    pub async fn check(&self, key: &str, window: Window) -> Option<Decision> {
        let lease = self.lease_for(key, window)?;
        if let Some(decision) = lease.take(window, self.limit) {
            return Some(decision);
        }
        if !self.store.may_call() {
            return None;
        }
        // One refill per key at a time; requests arriving meanwhile use what it brings.
        let failures_before = self.store.failure_count.load(Ordering::Acquire);
        let _refilling = lease.refill.lock().await;
        if let Some(decision) = lease.take(window, self.limit) {
            return Some(decision);
        }
        if self.store.failure_count.load(Ordering::Acquire) != failures_before {
            return None;
        }
        let want = lease.batch(self.max_batch);
        let redis_key = format!("{}{}:{key}", self.prefix, window.number);
        let (granted, used) = self.store.lease(redis_key, want, self.limit, window.left_ms + KEY_SLACK_MS).await?;
        Some(lease.leased(window, granted, used, self.limit, self.max_batch))
    }

    fn lease_for(&self, key: &str, window: Window) -> Option<Arc<KeyLease>> {
        let mut leases = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(lease) = leases.get(key) {
            return Some(Arc::clone(lease));
        }
        if leases.len() >= MAX_KEYS {
            leases.retain(|_, lease| lease.window() == window.number);
            if leases.len() >= MAX_KEYS {
                return None;
            }
        }
        let lease = Arc::new(KeyLease::default());
        leases.insert(key.to_owned(), Arc::clone(&lease));
        Some(lease)
    }
}

/// One key's lease in this replica.
#[derive(Default)]
struct KeyLease {
    state: Mutex<LeaseState>,
    refill: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct LeaseState {
    window: u64,
    /// Leased and not handed out yet.
    available: u32,
    /// Leased by all replicas in this window, as of this replica's last lease.
    used: u64,
    /// Redis had nothing left for this window.
    exhausted: bool,
    /// The next lease's size.
    batch: u32,
    last_lease: Option<Instant>,
}

impl KeyLease {
    fn window(&self) -> u64 {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).window
    }

    /// A decision without Redis: from the lease, or a refusal once the budget is gone.
    fn take(&self, window: Window, limit: u32) -> Option<Decision> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.enter(window.number);
        if state.exhausted {
            return Some(refused(window, limit));
        }
        if state.available == 0 {
            return None;
        }
        state.available -= 1;
        Some(allowed(window, limit, state.used, state.available))
    }

    fn batch(&self, max_batch: u32) -> u32 {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.batch.clamp(1, max_batch)
    }

    /// Records a lease from Redis and decides the request that asked for it.
    fn leased(&self, window: Window, granted: u32, used: u64, limit: u32, max_batch: u32) -> Decision {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.enter(window.number);
        let now = Instant::now();
        state.batch = match state.last_lease.map(|at| now.duration_since(at)) {
            Some(lasted) if lasted < GROW_WITHIN => state.batch.saturating_mul(2),
            Some(lasted) if lasted > SHRINK_AFTER => state.batch / 2,
            _ => state.batch,
        }
        .clamp(1, max_batch);
        state.last_lease = Some(now);
        state.used = used;
        if granted == 0 {
            state.exhausted = true;
            return refused(window, limit);
        }
        state.available += granted - 1;
        allowed(window, limit, state.used, state.available)
    }
}

impl LeaseState {
    /// A new window drops what was leased in the old one.
    fn enter(&mut self, window: u64) {
        if self.window != window {
            *self = Self { window, batch: self.batch, last_lease: self.last_lease, ..Self::default() };
        }
    }
}

/// The shared budget left is what Redis has not leased plus this replica's unused lease.
fn allowed(window: Window, limit: u32, used: u64, available: u32) -> Decision {
    let remaining = u64::from(limit).saturating_sub(used) + u64::from(available);
    Decision {
        allowed: true,
        limit,
        remaining: remaining.min(u64::from(limit)) as u32,
        reset_seconds: window.reset_seconds(),
    }
}

fn refused(window: Window, limit: u32) -> Decision {
    Decision { allowed: false, limit, remaining: 0, reset_seconds: window.reset_seconds() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Window = Window { number: 7, left_ms: 30_000 };

    #[test]
    fn a_lease_is_handed_out_locally_then_runs_dry() {
        let lease = KeyLease::default();
        assert_eq!(lease.take(WINDOW, 100), None, "nothing leased yet");
        let first = lease.leased(WINDOW, 3, 3, 100, 10);
        assert!(first.allowed);
        assert_eq!(first.remaining, 99);
        assert_eq!(lease.take(WINDOW, 100).map(|d| d.remaining), Some(98));
        assert_eq!(lease.take(WINDOW, 100).map(|d| d.remaining), Some(97));
        assert_eq!(lease.take(WINDOW, 100), None, "the lease of 3 is used up");
    }

    #[test]
    fn remaining_counts_other_replicas_leases() {
        let lease = KeyLease::default();
        // Another replica leased 50 before us: Redis reports 52 used after our 2.
        let decision = lease.leased(WINDOW, 2, 52, 100, 10);
        assert_eq!(decision.remaining, 49);
    }

    #[test]
    fn a_used_up_budget_is_refused_without_asking_again_until_the_window_ends() {
        let lease = KeyLease::default();
        let refusal = lease.leased(WINDOW, 0, 100, 100, 10);
        assert!(!refusal.allowed);
        assert_eq!((refusal.remaining, refusal.reset_seconds), (0, 30));
        assert_eq!(lease.take(WINDOW, 100).map(|d| d.allowed), Some(false));
        let next = Window { number: 8, left_ms: 60_000 };
        assert_eq!(lease.take(next, 100), None, "a new window asks Redis again");
    }

    #[test]
    fn a_new_window_drops_the_old_lease() {
        let lease = KeyLease::default();
        lease.leased(WINDOW, 5, 5, 100, 10);
        assert_eq!(lease.take(Window { number: 8, left_ms: 60_000 }, 100), None);
    }

    #[test]
    fn the_batch_grows_while_leases_run_out_fast_and_is_capped() {
        let lease = KeyLease::default();
        let batches: Vec<u32> = (0..6)
            .map(|_| {
                lease.leased(WINDOW, 1, 1, 1000, 8);
                lease.batch(8)
            })
            .collect();
        assert_eq!(batches, vec![1, 2, 4, 8, 8, 8]);
    }

    #[test]
    fn small_limits_lease_one_at_a_time() {
        assert_eq!(max_batch(10), 1);
        assert_eq!(max_batch(255), 1);
        assert_eq!(max_batch(300), 2);
        assert_eq!(max_batch(1_000_000_000), 7_812_500);
    }
}
