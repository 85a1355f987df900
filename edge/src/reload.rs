//! Hot reload: the policy directory is watched (inotify via `notify`) and, as a backstop
//! for what watching misses (a Kubernetes ConfigMap swaps its `..data` symlink; some
//! volumes send no events), fingerprinted every second. A changed set is parsed and
//! validated as a whole and swapped in atomically; a refused set keeps the last good
//! policy, is logged and counted.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::{Mutex, Notify};

use crate::active_policy::ActivePolicy;
use crate::limits::shared::SharedStore;
use crate::metrics::EdgeMetrics;
use crate::policy::{fingerprint, parse, read_sources, Capabilities, PolicyErrors};

/// How often the directory is fingerprinted even without events.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Quiet time after an event before reading, so an editor's burst of writes is one reload.
const DEBOUNCE: Duration = Duration::from_millis(150);

#[derive(Debug)]
pub enum Outcome {
    Unchanged,
    Loaded { generation: u64 },
    Refused(PolicyErrors),
}

struct Progress {
    last_fingerprint: Option<u64>,
    generation: u64,
}

/// Loads the policy directory into the shared [`ActivePolicy`] state when its files changed.
pub struct Reloader {
    dir: PathBuf,
    live: Arc<ArcSwapOption<ActivePolicy>>,
    metrics: Arc<EdgeMetrics>,
    /// The shared rate-limit store, when `EDGE_REDIS_URL` is set.
    limit_store: Option<Arc<SharedStore>>,
    progress: Mutex<Progress>,
}

impl Reloader {
    pub fn new(
        dir: PathBuf,
        live: Arc<ArcSwapOption<ActivePolicy>>,
        metrics: Arc<EdgeMetrics>,
        limit_store: Option<Arc<SharedStore>>,
    ) -> Self {
        let progress = Mutex::new(Progress { last_fingerprint: None, generation: 0 });
        Self { dir, live, metrics, limit_store, progress }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub async fn reload_if_changed(&self) -> Outcome {
        let mut progress = self.progress.lock().await;
        let dir = self.dir.clone();
        let sources = match tokio::task::spawn_blocking(move || read_sources(&dir)).await {
            Ok(sources) => sources,
            Err(e) => {
                tracing::error!(error = %e, "reading the policy directory failed");
                return Outcome::Unchanged;
            }
        };
        let print = fingerprint(&sources);
        if progress.last_fingerprint == Some(print) {
            return Outcome::Unchanged;
        }
        progress.last_fingerprint = Some(print);
        let capabilities = Capabilities { redis: self.limit_store.is_some() };
        match sources.and_then(|files| parse(&files, capabilities)) {
            Ok(policy) => {
                progress.generation += 1;
                let generation = progress.generation;
                let previous = self.live.load_full();
                let live =
                    ActivePolicy::build(&policy, previous.as_deref(), generation, self.limit_store.as_ref()).await;
                self.live.store(Some(Arc::new(live)));
                self.metrics.reloaded(generation, print);
                tracing::info!(
                    generation,
                    routes = policy.routes.len(),
                    upstreams = policy.upstreams.len(),
                    dir = %self.dir.display(),
                    "policy loaded"
                );
                Outcome::Loaded { generation }
            }
            Err(errors) => {
                self.metrics.reload_failed();
                let kept =
                    if self.live.load().is_some() { "the last good policy stays" } else { "no policy is loaded" };
                tracing::error!(
                    dir = %self.dir.display(),
                    problems = %errors,
                    "policy refused; {kept}"
                );
                Outcome::Refused(errors)
            }
        }
    }
}

/// The background service that keeps the policy current until shutdown.
pub struct PolicyWatcher {
    reloader: Arc<Reloader>,
}

impl PolicyWatcher {
    pub fn new(reloader: Arc<Reloader>) -> Self {
        Self { reloader }
    }
}

fn watch_dir(dir: &Path, wake: Arc<Notify>) -> Option<RecommendedWatcher> {
    let handler = move |event: notify::Result<notify::Event>| match event {
        Ok(event) if event.kind.is_access() => {}
        _ => wake.notify_one(),
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(watcher) => watcher,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the policy directory; polling only");
            return None;
        }
    };
    if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the policy directory; polling only");
        return None;
    }
    Some(watcher)
}

#[async_trait]
impl BackgroundService for PolicyWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let wake = Arc::new(Notify::new());
        // Dropping the watcher (at shutdown) stops its thread.
        let _watcher = watch_dir(self.reloader.dir(), Arc::clone(&wake));
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = wake.notified() => {
                    tokio::select! {
                        _ = shutdown.changed() => break,
                        _ = tokio::time::sleep(DEBOUNCE) => {}
                    }
                }
                _ = poll.tick() => {}
            }
            self.reloader.reload_if_changed().await;
        }
    }
}
