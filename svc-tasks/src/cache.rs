//! Cache-aside for task lists, invalidated by a per-user version: the [`ListCache`] seam,
//! its Redis implementation ([`RedisListCache`], production) and an in-process one
//! ([`MemoryListCache`], the standalone mode) with the same version semantics.
//!
//! A read looks up the user's version, then the list under a key made of the version and
//! the query. A write bumps the version after its MongoDB commit. A read that raced a
//! write (read the old version, then old data from MongoDB) can only fill a key under the
//! old version, which no read looks at again, so a read after a write is never stale.
//!
//! Every Redis call has a short timeout, and any failure makes the caller answer from
//! MongoDB. A write whose version bump failed (Redis unreachable) leaves a list cached
//! before it in Redis. Two things hide it once Redis is back:
//! - the replica that saw the bump fail marks itself as owing an *epoch* bump: until a
//!   global epoch counter, part of every list key, has been incremented, it reads nothing
//!   from Redis, and its first successful Redis call increments it, which makes every
//!   list cached before the outage unreachable for every replica;
//! - the outbox relay bumps the owner's version again for that write, durably (it
//!   retries until Redis takes it, across restarts).
//!
//! The window left: another replica that reaches Redis before either has happened may
//! serve a list cached before the write (between Redis coming back and the failing
//! replica's next call or the relay's next poll, ~0.5 s); and if Redis loses the version
//! key itself (eviction, restart without persistence) a list cached under the same
//! version within the last TTL could be seen again. Cached lists live at most
//! `LIST_TTL_SECONDS` either way.

#[cfg(feature = "embedded")]
mod memory;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use todo_common::health::BackendState;
use todo_common::redis::{RedisClient, RedisError};

use crate::domain::{ListQuery, UserId};

#[cfg(feature = "embedded")]
pub use memory::MemoryListCache;

/// Every Redis call gives up after this; the caller then uses MongoDB.
const REDIS_TIMEOUT: Duration = Duration::from_millis(300);
const LIST_TTL_SECONDS: u64 = 60;
/// Far longer than any list lives, so a version never restarts under a live list.
const VERSION_TTL_SECONDS: i64 = 24 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error("the in-process cache is poisoned by a panic")]
    Poisoned,
}

/// The list cache as the handlers and the outbox relay use it.
#[async_trait]
pub trait ListCache: Send + Sync + 'static {
    /// Looks up the owner's version, then the page cached for `query` under it.
    async fn read(&self, owner: &UserId, query: &ListQuery) -> CacheRead;
    /// Stores a page read from the store under the version seen before reading it.
    async fn fill(&self, owner: &UserId, version: u64, query: &ListQuery, page: &[u8]);
    /// Makes every list cached for `owner` unreachable.
    async fn invalidate(&self, owner: &UserId) -> Result<(), CacheError>;
    /// The backend's name in `/readyz`.
    fn backend_name(&self) -> &'static str;
    /// Never critical: down shows as degraded.
    async fn state(&self) -> BackendState;
}

/// What a list read found in the cache.
#[derive(Debug)]
pub enum CacheRead {
    /// The serialized page.
    Hit(Bytes),
    /// Not cached; fill under this version after reading MongoDB.
    Miss { version: u64 },
    /// Redis failed: answer from MongoDB and cache nothing.
    Unavailable,
}

pub struct RedisListCache {
    redis: RedisClient,
    prefix: String,
    /// A version bump failed here: the epoch must be bumped before Redis is trusted again.
    owes_epoch_bump: AtomicBool,
}

impl RedisListCache {
    /// Connects lazily: the service starts, and serves from MongoDB, while Redis is down.
    pub fn new(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let redis = RedisClient::new(url, "REDIS_URL", REDIS_TIMEOUT)?;
        Ok(Self { redis, prefix: prefix.to_owned(), owes_epoch_bump: AtomicBool::new(false) })
    }

    fn epoch_key(&self) -> String {
        format!("{}epoch", self.prefix)
    }

    fn version_key(&self, owner: &UserId) -> String {
        format!("{}{}:version", self.prefix, owner)
    }

    /// `version` is the pair (epoch, owner's version) folded into one number by
    /// [`fold_version`].
    fn list_key(&self, owner: &UserId, version: u64, query: &ListQuery) -> String {
        format!("{}{}:list:{version}:{}", self.prefix, owner, query.cache_key())
    }

    /// Pays a debt left by a failed version bump; until paid, the cache is not trusted.
    async fn settle_epoch(&self) -> Result<(), CacheError> {
        if self.owes_epoch_bump.load(Ordering::Acquire) {
            self.run::<u64>(redis::cmd("INCR").arg(self.epoch_key())).await?;
            self.owes_epoch_bump.store(false, Ordering::Release);
            tracing::info!("list cache epoch bumped after a missed invalidation");
        }
        Ok(())
    }

    async fn run<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Result<T, CacheError> {
        Ok(self.redis.query(command).await?)
    }
}

/// One number for (epoch, version): the epoch in the high 24 bits. A version would need
/// 2^40 writes by one user within a day (its key's TTL) to reach them.
fn fold_version(epoch: u64, version: u64) -> u64 {
    (epoch << 40) ^ version
}

#[async_trait]
impl ListCache for RedisListCache {
    #[tracing::instrument(name = "redis list read", skip_all, fields(otel.kind = "client", db.system.name = "redis"))]
    async fn read(&self, owner: &UserId, query: &ListQuery) -> CacheRead {
        let read = async {
            self.settle_epoch().await?;
            let (epoch, version): (Option<u64>, Option<u64>) =
                self.run(redis::cmd("MGET").arg(self.epoch_key()).arg(self.version_key(owner))).await?;
            let version = fold_version(epoch.unwrap_or(0), version.unwrap_or(0));
            let cached: Option<Vec<u8>> = self.run(redis::cmd("GET").arg(self.list_key(owner, version, query))).await?;
            Ok::<_, CacheError>(match cached {
                Some(bytes) => CacheRead::Hit(Bytes::from(bytes)),
                None => CacheRead::Miss { version },
            })
        };
        match read.await {
            Ok(read) => read,
            Err(error) => {
                tracing::warn!(%error, "list cache unavailable, reading from MongoDB");
                CacheRead::Unavailable
            }
        }
    }

    async fn fill(&self, owner: &UserId, version: u64, query: &ListQuery, page: &[u8]) {
        let key = self.list_key(owner, version, query);
        let command = redis::cmd("SET").arg(key).arg(page).arg("EX").arg(LIST_TTL_SECONDS).clone();
        if let Err(error) = self.run::<()>(&command).await {
            tracing::warn!(%error, "could not cache a task list");
        }
    }

    async fn invalidate(&self, owner: &UserId) -> Result<(), CacheError> {
        let key = self.version_key(owner);
        let mut pipeline = redis::pipe();
        pipeline.atomic().incr(&key, 1).ignore().expire(&key, VERSION_TTL_SECONDS).ignore();
        match self.redis.pipeline::<()>(&pipeline).await {
            Ok(()) => self.settle_epoch().await,
            Err(error) => {
                self.owes_epoch_bump.store(true, Ordering::Release);
                Err(error.into())
            }
        }
    }

    fn backend_name(&self) -> &'static str {
        "redis"
    }

    async fn state(&self) -> BackendState {
        self.redis.readiness("lists are read from MongoDB").await
    }
}
