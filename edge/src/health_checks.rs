//! The upstream health checks: one background service runs the due checks of every pool
//! of the current policy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::task::JoinSet;

use crate::active_policy::ActivePolicy;

/// Runs the due health checks of every pool of the current policy; a pool's checks never
/// overlap, and a slow pool does not delay the others.
pub struct HealthChecks {
    live: Arc<ArcSwapOption<ActivePolicy>>,
}

impl HealthChecks {
    pub fn new(live: Arc<ArcSwapOption<ActivePolicy>>) -> Self {
        Self { live }
    }
}

const TICK: Duration = Duration::from_millis(100);

#[async_trait]
impl BackgroundService for HealthChecks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut running = JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tokio::time::sleep(TICK) => {}
            }
            while running.try_join_next().is_some() {}
            let Some(live) = self.live.load_full() else { continue };
            let now = Instant::now();
            for pool in live.pools.values() {
                if pool.claim_due_check(now) {
                    let pool = Arc::clone(pool);
                    running.spawn(async move { pool.refresh().await });
                }
            }
        }
        running.shutdown().await;
    }
}
