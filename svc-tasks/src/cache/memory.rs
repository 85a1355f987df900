//! The in-process list cache of the standalone mode: the Redis cache's version scheme in
//! a bounded map.
//!
//! Each cached user has a version and the pages cached under it. `invalidate` gives the
//! user a fresh version (from one counter, so a version is never handed out twice) and
//! drops their pages. A fill is kept only if the user's version is still the one the
//! read saw, so a read that raced a write never caches stale data for later reads. A
//! user not in the map has the `absent` version; evicting a user (the map is full) draws
//! a fresh `absent` version, so a fill begun before the eviction is refused too. Pages
//! live at most `LIST_TTL`; at most `MAX_PAGES` pages and `MAX_USERS` users are kept.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use todo_common::health::BackendState;

use super::{CacheError, CacheRead, ListCache};
use crate::domain::{ListQuery, UserId};

const LIST_TTL: Duration = Duration::from_secs(60);
const MAX_PAGES: usize = 10_000;
const MAX_USERS: usize = 10_000;

struct UserLists {
    version: u64,
    pages: HashMap<String, (Bytes, Instant)>,
}

struct State {
    users: HashMap<UserId, UserLists>,
    /// Pages over all users.
    pages: usize,
    /// The version of every user not in `users`.
    absent: u64,
    /// The last version handed out.
    counter: u64,
}

impl State {
    fn next_version(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn version(&self, owner: &UserId) -> u64 {
        self.users.get(owner).map_or(self.absent, |lists| lists.version)
    }

    /// Removes one user other than `keep`, so their pending fills are refused.
    fn evict_one(&mut self, keep: &UserId) {
        let Some(victim) = self.users.keys().find(|user| *user != keep).cloned() else { return };
        if let Some(lists) = self.users.remove(&victim) {
            self.pages -= lists.pages.len();
        }
        self.absent = self.next_version();
    }

    fn drop_expired(&mut self, now: Instant) {
        let mut dropped = 0;
        for lists in self.users.values_mut() {
            let before = lists.pages.len();
            lists.pages.retain(|_, (_, expires)| *expires > now);
            dropped += before - lists.pages.len();
        }
        self.pages -= dropped;
    }
}

pub struct MemoryListCache {
    state: Mutex<State>,
}

impl Default for MemoryListCache {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryListCache {
    pub fn new() -> Self {
        Self { state: Mutex::new(State { users: HashMap::new(), pages: 0, absent: 0, counter: 0 }) }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>, CacheError> {
        self.state.lock().map_err(|_| CacheError::Poisoned)
    }
}

#[async_trait]
impl ListCache for MemoryListCache {
    async fn read(&self, owner: &UserId, query: &ListQuery) -> CacheRead {
        let Ok(state) = self.lock() else { return CacheRead::Unavailable };
        let version = state.version(owner);
        let cached = state
            .users
            .get(owner)
            .and_then(|lists| lists.pages.get(&query.cache_key()))
            .filter(|(_, expires)| *expires > Instant::now());
        match cached {
            Some((page, _)) => CacheRead::Hit(page.clone()),
            None => CacheRead::Miss { version },
        }
    }

    async fn fill(&self, owner: &UserId, version: u64, query: &ListQuery, page: &[u8]) {
        let Ok(mut state) = self.lock() else { return };
        if state.version(owner) != version {
            return; // a write came in between: this page may be stale
        }
        let now = Instant::now();
        if state.pages >= MAX_PAGES {
            state.drop_expired(now);
        }
        while state.pages >= MAX_PAGES || (state.users.len() >= MAX_USERS && !state.users.contains_key(owner)) {
            let before = state.users.len();
            state.evict_one(owner);
            if state.users.len() == before {
                return; // only this user's pages are left: keep them, skip this one
            }
        }
        let absent = state.absent;
        if state.version(owner) != version {
            return; // evicting another user moved the absent version this read saw
        }
        let lists =
            state.users.entry(owner.clone()).or_insert_with(|| UserLists { version: absent, pages: HashMap::new() });
        if lists.pages.insert(query.cache_key(), (Bytes::copy_from_slice(page), now + LIST_TTL)).is_none() {
            state.pages += 1;
        }
    }

    async fn invalidate(&self, owner: &UserId) -> Result<(), CacheError> {
        let mut state = self.lock()?;
        let version = state.next_version();
        if !state.users.contains_key(owner) && state.users.len() >= MAX_USERS {
            state.evict_one(owner);
        }
        let lists = state.users.entry(owner.clone()).or_insert_with(|| UserLists { version, pages: HashMap::new() });
        let dropped = lists.pages.len();
        lists.version = version;
        lists.pages.clear();
        state.pages -= dropped;
        Ok(())
    }

    fn backend_name(&self) -> &'static str {
        "memory-cache"
    }

    async fn state(&self) -> BackendState {
        match self.lock() {
            Ok(_) => BackendState::Up,
            Err(error) => BackendState::Degraded { detail: error.to_string() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(limit: u32) -> ListQuery {
        ListQuery { status: None, limit, cursor: None }
    }

    fn user(name: &str) -> UserId {
        UserId::from_verified_subject(name)
    }

    #[tokio::test]
    async fn a_filled_page_is_a_hit_until_the_owner_writes() {
        let cache = MemoryListCache::new();
        let alice = user("alice");
        let CacheRead::Miss { version } = cache.read(&alice, &query(10)).await else { panic!("a miss first") };
        cache.fill(&alice, version, &query(10), b"page").await;
        assert!(matches!(cache.read(&alice, &query(10)).await, CacheRead::Hit(page) if page == "page"));
        assert!(matches!(cache.read(&alice, &query(11)).await, CacheRead::Miss { .. }), "another query");
        cache.invalidate(&alice).await.unwrap();
        assert!(matches!(cache.read(&alice, &query(10)).await, CacheRead::Miss { .. }));
    }

    #[tokio::test]
    async fn a_fill_that_raced_a_write_is_never_served() {
        let cache = MemoryListCache::new();
        let alice = user("alice");
        let CacheRead::Miss { version } = cache.read(&alice, &query(10)).await else { panic!("a miss first") };
        cache.invalidate(&alice).await.unwrap(); // the write commits after the read's lookup
        cache.fill(&alice, version, &query(10), b"stale").await;
        assert!(matches!(cache.read(&alice, &query(10)).await, CacheRead::Miss { .. }));
    }

    #[tokio::test]
    async fn eviction_bounds_the_cache_and_refuses_fills_begun_before_it() {
        let cache = MemoryListCache::new();
        let bob = user("bob");
        let CacheRead::Miss { version: bobs } = cache.read(&bob, &query(1)).await else { panic!("a miss first") };
        for n in 0..MAX_USERS + 5 {
            let someone = user(&format!("user-{n}"));
            let CacheRead::Miss { version } = cache.read(&someone, &query(1)).await else { panic!("a miss") };
            cache.fill(&someone, version, &query(1), b"p").await;
        }
        {
            let state = cache.state.lock().unwrap();
            assert!(state.users.len() <= MAX_USERS && state.pages <= MAX_PAGES);
        }
        cache.fill(&bob, bobs, &query(1), b"from before the evictions").await;
        assert!(matches!(cache.read(&bob, &query(1)).await, CacheRead::Miss { .. }));
    }
}
