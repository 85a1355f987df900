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
//! - requests that find the lease empty wait for one refill per key, which leases enough
//!   for all of them at once, so a burst costs one round trip, not one each;
//! - keys are aligned to the window (`…:{window number}:{key}`), so replicas agree on
//!   windows without talking to each other, and each key expires after its window: a
//!   replica that dies loses its unused lease only until then;
//! - a key Redis reports as used up is refused here for the rest of the window, without
//!   asking again.
//!
//! Redis failing (an error, or no answer within [`REDIS_TIMEOUT`]) sends every redis
//! table to its local counters, counts the failure and shows `degraded` in `/readyz`. A
//! background check pings Redis every second, so an outage shows even without traffic,
//! and the shared budget is back within a second of Redis answering again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use prometheus::IntCounter;
use todo_common::health::BackendState;
use todo_common::redis::{RedisClient, Script};

use super::{Decision, Window};
use crate::metrics::EdgeMetrics;
use crate::policy::LimitSpec;

/// Every Redis call gives up after this.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(200);
/// The longest a request waits for a lease, queueing included; then it counts locally.
const LEASE_DEADLINE: Duration = Duration::from_millis(300);
/// How often the background check pings Redis.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// Every key the edge writes starts with this, so it can share a Redis with svc-tasks.
pub const KEY_PREFIX: &str = "edge:ratelimit:";
/// A lease is at most this share of the limit.
const MAX_BATCH_DIVISOR: u32 = 128;
/// A lease used up sooner than this doubles the next one...
const GROW_WITHIN: Duration = Duration::from_millis(200);
/// ...and one that lasted longer than this halves it.
const SHRINK_AFTER: Duration = Duration::from_secs(2);
/// Keys with leases kept per table. Beyond it (a flood of addresses), new keys get a
/// lease of their own that is not kept: still exact, at one round trip per request.
const MAX_KEYS: usize = 50_000;
/// Keys outlive their window by this much, for replicas whose clocks differ a little.
const KEY_SLACK_MS: u64 = 60_000;

/// KEYS[1]: one key's count for one window. ARGV: the batch wanted, the limit, the
/// key's time to live in ms (set when the key is created, so no replica's clock can
/// shorten it later). Grants what is left, up to the batch, and returns
/// `{granted, leased in this window so far}`.
const LEASE_SCRIPT: &str = r"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local grant = math.min(tonumber(ARGV[1]), tonumber(ARGV[2]) - used)
if grant <= 0 then
  return {0, used}
end
used = redis.call('INCRBY', KEYS[1], grant)
if used == grant then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return {grant, used}
";

/// Whether Redis answers, as the last call or ping found it.
struct Health {
    failing: AtomicBool,
    last_error: Mutex<String>,
    failures: IntCounter,
}

impl Health {
    fn succeeded(&self) {
        if self.failing.swap(false, Ordering::AcqRel) {
            tracing::info!("rate-limit store answers again; shared limits are back");
        }
    }

    fn failed(&self, error: String) {
        self.failures.inc();
        if !self.failing.swap(true, Ordering::AcqRel) {
            tracing::warn!(%error, "rate-limit store unreachable; shared limits count per replica");
        }
        *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = error;
    }
}

/// The process's connection to the shared store, used by every redis table.
pub struct SharedStore {
    redis: RedisClient,
    script: Script,
    /// The Redis client's own runtime: its connection task must not live on whichever
    /// Pingora worker happened to use it first, nor on the start-up runtime.
    runtime: Option<tokio::runtime::Runtime>,
    health: Arc<Health>,
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
        let health = Arc::new(Health {
            failing: AtomicBool::new(false),
            last_error: Mutex::new(String::new()),
            failures: metrics.limit_store_failures(),
        });
        runtime.spawn(check_health(redis.clone(), Arc::clone(&health)));
        Ok(Self {
            redis,
            script: Script::new(LEASE_SCRIPT),
            runtime: Some(runtime),
            health,
            leases: metrics.limit_store_leases(),
        })
    }

    /// For `/readyz`; never makes the edge unready.
    pub fn state(&self) -> BackendState {
        if !self.health.failing.load(Ordering::Acquire) {
            return BackendState::Up;
        }
        let error = self.health.last_error.lock().unwrap_or_else(PoisonError::into_inner).clone();
        BackendState::Degraded { detail: format!("{error}; shared rate limits count per replica") }
    }

    fn answers(&self) -> bool {
        !self.health.failing.load(Ordering::Acquire)
    }

    /// Leases up to `want` for `key` into `lease` and decides the request that asked;
    /// `None` when Redis failed (recorded). The grant is recorded on the Redis client's
    /// runtime, so a request that gives up meanwhile loses nothing.
    async fn lease(&self, lease: Arc<KeyLease>, request: LeaseRequest) -> Option<Decision> {
        let runtime = self.runtime.as_ref()?;
        let (redis, script, health) = (self.redis.clone(), self.script.clone(), Arc::clone(&self.health));
        let leases = self.leases.clone();
        let call = runtime.spawn(async move {
            let mut invocation = script.key(&request.redis_key);
            invocation.arg(request.want).arg(request.limit).arg(request.window.left_ms + KEY_SLACK_MS);
            match redis.script::<(u32, u64)>(&invocation).await {
                Ok((granted, used)) => {
                    leases.inc();
                    health.succeeded();
                    Some(lease.leased(&request, granted, used))
                }
                Err(error) => {
                    health.failed(error.to_string());
                    None
                }
            }
        });
        call.await.unwrap_or_else(|e| {
            self.health.failed(format!("the Redis call failed: {e}"));
            None
        })
    }
}

/// Pings Redis every [`HEALTH_INTERVAL`] until the runtime stops.
async fn check_health(redis: RedisClient, health: Arc<Health>) {
    let mut every = tokio::time::interval(HEALTH_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match redis.ping().await {
            Ok(()) => health.succeeded(),
            Err(error) => health.failed(error.to_string()),
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

/// The largest lease for a limit.
fn max_batch(limit: u32) -> u32 {
    (limit / MAX_BATCH_DIVISOR).max(1)
}

/// What one call to Redis asks for.
struct LeaseRequest {
    redis_key: String,
    want: u32,
    limit: u32,
    max_batch: u32,
    window: Window,
}

/// One redis table's leases, per key.
pub struct SharedCounter {
    store: Arc<SharedStore>,
    /// `edge:ratelimit:{table}:{requests}:{window seconds}:`: a changed table starts afresh,
    /// and replicas on different versions of it during a rollout do not mix budgets.
    prefix: String,
    limit: u32,
    window_length: Duration,
    max_batch: u32,
    leases: Mutex<Leases>,
}

#[derive(Default)]
struct Leases {
    by_key: HashMap<String, Arc<KeyLease>>,
    /// The window whose start last swept out older keys.
    swept: u64,
}

impl SharedCounter {
    pub fn new(store: Arc<SharedStore>, table: &str, spec: &LimitSpec) -> Self {
        let prefix = format!("{KEY_PREFIX}{table}:{}:{}:", spec.requests, spec.window.as_secs());
        Self {
            store,
            prefix,
            limit: spec.requests,
            window_length: spec.window,
            max_batch: max_batch(spec.requests),
            leases: Mutex::new(Leases::default()),
        }
    }

    /// The shared decision, or `None` when Redis cannot give one in time: the caller
    /// then counts locally.
    pub async fn check(&self, key: &str, window: Window) -> Option<Decision> {
        let lease = self.lease_for(key, window);
        if let Some(decision) = lease.take(window, self.limit) {
            return Some(decision);
        }
        if !self.store.answers() {
            return None;
        }
        tokio::time::timeout(LEASE_DEADLINE, self.refill(key, lease)).await.ok().flatten()
    }

    /// One refill per key at a time; requests arriving meanwhile use what it brings.
    async fn refill(&self, key: &str, lease: Arc<KeyLease>) -> Option<Decision> {
        let _waiting = lease.wait();
        let _refilling = lease.refill.lock().await;
        // The window may have turned while this request waited.
        let window = Window::now(self.window_length);
        if let Some(decision) = lease.take(window, self.limit) {
            return Some(decision);
        }
        if !self.store.answers() {
            return None;
        }
        let request = LeaseRequest {
            redis_key: format!("{}{}:{key}", self.prefix, window.number),
            want: lease.want(self.max_batch),
            limit: self.limit,
            max_batch: self.max_batch,
            window,
        };
        self.store.lease(Arc::clone(&lease), request).await
    }

    fn lease_for(&self, key: &str, window: Window) -> Arc<KeyLease> {
        let mut leases = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(lease) = leases.by_key.get(key) {
            return Arc::clone(lease);
        }
        let lease = Arc::new(KeyLease::new(window.number));
        if leases.by_key.len() >= MAX_KEYS && leases.swept < window.number {
            leases.swept = window.number;
            leases.by_key.retain(|_, lease| lease.window() >= window.number);
        }
        if leases.by_key.len() < MAX_KEYS {
            leases.by_key.insert(key.to_owned(), Arc::clone(&lease));
        }
        lease
    }
}

/// One key's lease in this replica.
struct KeyLease {
    state: Mutex<LeaseState>,
    refill: tokio::sync::Mutex<()>,
    /// Requests waiting for the refill: the next lease is at least this large.
    waiting: AtomicU32,
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
    /// The next lease's size, before counting the waiting requests.
    batch: u32,
    last_lease: Option<Instant>,
}

/// Counts a request as waiting for as long as it lives.
struct Waiting<'a>(&'a AtomicU32);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl KeyLease {
    fn new(window: u64) -> Self {
        Self {
            state: Mutex::new(LeaseState { window, ..LeaseState::default() }),
            refill: tokio::sync::Mutex::new(()),
            waiting: AtomicU32::new(0),
        }
    }

    fn window(&self) -> u64 {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).window
    }

    fn wait(&self) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        Waiting(&self.waiting)
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

    /// The next lease: the adapted batch, or enough for every waiting request.
    fn want(&self, max_batch: u32) -> u32 {
        let batch = self.state.lock().unwrap_or_else(PoisonError::into_inner).batch.clamp(1, max_batch);
        batch.max(self.waiting.load(Ordering::Acquire))
    }

    /// Records a lease from Redis and decides the request that asked for it.
    fn leased(&self, request: &LeaseRequest, granted: u32, used: u64) -> Decision {
        let (window, limit) = (request.window, request.limit);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.enter(window.number);
        let now = Instant::now();
        state.batch = match state.last_lease.map(|at| now.duration_since(at)) {
            Some(lasted) if lasted < GROW_WITHIN => state.batch.saturating_mul(2),
            Some(lasted) if lasted > SHRINK_AFTER => state.batch / 2,
            _ => state.batch,
        }
        .clamp(1, request.max_batch);
        state.last_lease = Some(now);
        state.used = state.used.max(used);
        if granted == 0 {
            state.exhausted = true;
            return refused(window, limit);
        }
        state.available += granted - 1;
        allowed(window, limit, state.used, state.available)
    }
}

impl LeaseState {
    /// A later window drops what was leased in the earlier one. A request still deciding
    /// in the window that just ended uses the current one rather than undoing it.
    fn enter(&mut self, window: u64) {
        if window > self.window {
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
    const LIMIT: u32 = 100;

    fn request(window: Window, max_batch: u32) -> LeaseRequest {
        LeaseRequest { redis_key: "k".into(), want: 1, limit: LIMIT, max_batch, window }
    }

    fn leased(lease: &KeyLease, granted: u32, used: u64) -> Decision {
        lease.leased(&request(WINDOW, 10), granted, used)
    }

    #[test]
    fn a_lease_is_handed_out_locally_then_runs_dry() {
        let lease = KeyLease::new(WINDOW.number);
        assert_eq!(lease.take(WINDOW, LIMIT), None, "nothing leased yet");
        let first = leased(&lease, 3, 3);
        assert!(first.allowed);
        assert_eq!(first.remaining, 99);
        assert_eq!(lease.take(WINDOW, LIMIT).map(|d| d.remaining), Some(98));
        assert_eq!(lease.take(WINDOW, LIMIT).map(|d| d.remaining), Some(97));
        assert_eq!(lease.take(WINDOW, LIMIT), None, "the lease of 3 is used up");
    }

    #[test]
    fn remaining_counts_other_replicas_leases() {
        let lease = KeyLease::new(WINDOW.number);
        // Another replica leased 50 before us: Redis reports 52 used after our 2.
        assert_eq!(leased(&lease, 2, 52).remaining, 49);
    }

    #[test]
    fn a_used_up_budget_is_refused_without_asking_again_until_the_window_ends() {
        let lease = KeyLease::new(WINDOW.number);
        let refusal = leased(&lease, 0, 100);
        assert!(!refusal.allowed);
        assert_eq!((refusal.remaining, refusal.reset_seconds), (0, 30));
        assert_eq!(lease.take(WINDOW, LIMIT).map(|d| d.allowed), Some(false));
        let next = Window { number: 8, left_ms: 60_000 };
        assert_eq!(lease.take(next, LIMIT), None, "a new window asks Redis again");
    }

    #[test]
    fn a_new_window_drops_the_old_lease_and_a_late_request_does_not_undo_it() {
        let lease = KeyLease::new(WINDOW.number);
        leased(&lease, 5, 5);
        let next = Window { number: 8, left_ms: 60_000 };
        assert_eq!(lease.take(next, LIMIT), None);
        lease.leased(&request(next, 10), 3, 3);
        // A request that started in window 7 and decides now takes from window 8's lease.
        assert_eq!(lease.take(WINDOW, LIMIT).map(|d| d.allowed), Some(true));
        assert_eq!(lease.take(next, LIMIT).map(|d| d.allowed), Some(true));
        assert_eq!(lease.take(next, LIMIT), None);
    }

    #[test]
    fn the_batch_grows_while_leases_run_out_fast_and_is_capped() {
        let lease = KeyLease::new(WINDOW.number);
        let batches: Vec<u32> = (0..6)
            .map(|_| {
                lease.leased(&request(WINDOW, 8), 1, 1);
                lease.want(8)
            })
            .collect();
        assert_eq!(batches, vec![1, 2, 4, 8, 8, 8]);
    }

    #[test]
    fn waiting_requests_are_leased_for_at_once() {
        let lease = KeyLease::new(WINDOW.number);
        assert_eq!(lease.want(1), 1);
        let waiting: Vec<Waiting<'_>> = (0..5).map(|_| lease.wait()).collect();
        assert_eq!(lease.want(1), 5, "one round trip for the five");
        drop(waiting);
        assert_eq!(lease.want(1), 1);
    }

    #[test]
    fn small_limits_lease_one_at_a_time() {
        assert_eq!(max_batch(10), 1);
        assert_eq!(max_batch(255), 1);
        assert_eq!(max_batch(300), 2);
        assert_eq!(max_batch(1_000_000_000), 7_812_500);
    }
}
