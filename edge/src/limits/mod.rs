//! Fixed-window rate limits: one [`Limiter`] per limit table, shared by every route that
//! names it.
//!
//! Windows are aligned to the Unix epoch (a 60 s window resets at every full minute), so
//! `RateLimit-Reset` and `Retry-After` are exact and every replica agrees on the window.
//! A table counts either in this process ([`local`], `store = "local"`) or in one budget
//! all replicas share ([`shared`], `store = "redis"`); a shared table falls back to its
//! local counters while Redis cannot be reached.

pub mod local;
pub mod shared;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::client_ip::ClientAddress;
use crate::policy::{LimitKey, LimitSpec, LimitStore};
use local::LocalCounter;
use shared::{SharedCounter, SharedStore};

/// What a limited request learns about its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the window ends, at least 1.
    pub reset_seconds: u64,
}

/// The window a moment falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Windows since the epoch: part of every counter's key.
    pub number: u64,
    /// Milliseconds until the window ends, at least 1.
    pub left_ms: u64,
}

impl Window {
    pub fn at(since_epoch: Duration, length: Duration) -> Self {
        let length_ms = (length.as_millis() as u64).max(1);
        let now_ms = since_epoch.as_millis() as u64;
        Self { number: now_ms / length_ms, left_ms: length_ms - now_ms % length_ms }
    }

    pub fn now(length: Duration) -> Self {
        Self::at(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO), length)
    }

    pub fn reset_seconds(&self) -> u64 {
        self.left_ms.div_ceil(1000).max(1)
    }
}

/// The counters of one limit table.
pub struct Limiter {
    spec: LimitSpec,
    local: LocalCounter,
    /// Set for `store = "redis"`.
    shared: Option<SharedCounter>,
}

impl Limiter {
    /// `store` is the process's connection to the shared store; validation guarantees it
    /// exists when `spec` asks for it.
    pub fn new(name: &str, spec: LimitSpec, store: Option<&Arc<SharedStore>>) -> Self {
        let shared = match (spec.store, store) {
            (LimitStore::Redis, Some(store)) => Some(SharedCounter::new(Arc::clone(store), name, &spec)),
            _ => None,
        };
        Self { local: LocalCounter::new(&spec), spec, shared }
    }

    pub fn spec(&self) -> &LimitSpec {
        &self.spec
    }

    /// Counts one request against the table's key (the client's address, or the token's
    /// subject) and says whether it fits the budget.
    pub async fn check_request(&self, client: Option<&ClientAddress>, subject: Option<&str>) -> Decision {
        match self.spec.key {
            LimitKey::ClientIp => match client {
                Some(client) => self.check(&client.ip.to_string()).await,
                None => self.check("unknown").await,
            },
            LimitKey::Subject => self.check(subject.unwrap_or_default()).await,
        }
    }

    /// Counts one request for `key` and says whether it fits the budget.
    pub async fn check(&self, key: &str) -> Decision {
        let window = Window::now(self.spec.window);
        if let Some(shared) = &self.shared {
            if let Some(decision) = shared.check(key, window).await {
                return decision;
            }
        }
        self.local.check(key, window)
    }
}
