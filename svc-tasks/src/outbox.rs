//! The transactional outbox and its relay.
//!
//! Each write stores its event here in the same transaction as the task change. The relay
//! (one per replica, woken after each commit and polling every `POLL_INTERVAL` for entries
//! left by a crash or an outage) claims one entry at a time with a lease, so replicas
//! never publish the same entry at once; publishes it with a confirm; bumps the owner's
//! list-cache version (a durable retry of the bump the handler already tried); and only
//! then deletes it. Delivery is at least once: an entry is published again only if its
//! confirm or its deletion is lost.
//!
//! The relay works on the seams ([`TaskStore`]'s outbox calls, [`EventPublisher`],
//! [`ListCache`]), so the standalone mode runs the same relay over redb and the
//! in-process bus.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounter, IntGauge, Registry};
use todo_common::traces;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::cache::ListCache;
use crate::domain::UserId;
use crate::events::EventEnvelope;
use crate::publisher::EventPublisher;
use crate::store::{StoreError, TaskStore};

const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Longer than any publish (connect 3 s + confirm 5 s) so a live lease is never taken over.
pub const LEASE: Duration = Duration::from_secs(30);
/// An entry that failed waits this long before it is claimed again.
pub const RETRY_DELAY: Duration = Duration::from_millis(500);
/// Entries relayed per pass before the loop checks for shutdown again.
const MAX_BATCH: usize = 256;
/// On shutdown, how long the relay may spend publishing what the last requests wrote.
const FINAL_DRAIN: Duration = Duration::from_secs(2);

/// The producer span of one publish attempt, in the trace of the request that wrote the
/// event, however long ago that was (an outage in between, say).
fn publish_span(envelope: &EventEnvelope) -> tracing::Span {
    let span = tracing::info_span!(
        "task.events publish",
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "rabbitmq",
        messaging.operation.type = "send",
        messaging.destination.name = "task.events",
        messaging.rabbitmq.destination.routing_key = %envelope.routing_key,
        messaging.message.id = %envelope.event_id,
    );
    traces::continue_trace(span, envelope.traceparent.as_deref())
}

/// What one `process_one` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayOutcome {
    /// Nothing was claimable.
    Empty,
    /// An entry was published, its cache version bumped, and it was removed.
    Relayed,
    /// An entry is kept for a later retry; `published` says whether the broker took it.
    Deferred { published: bool },
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RelaySummary {
    pub relayed: usize,
    pub deferred: usize,
}

pub struct Relay {
    store: Arc<dyn TaskStore>,
    publisher: Arc<dyn EventPublisher>,
    cache: Arc<dyn ListCache>,
    wake: Arc<Notify>,
    /// Names this relay in its leases.
    owner: String,
    published: IntCounter,
    publish_failed: IntCounter,
    backlog: IntGauge,
}

impl Relay {
    pub(crate) fn new(
        store: Arc<dyn TaskStore>,
        publisher: Arc<dyn EventPublisher>,
        cache: Arc<dyn ListCache>,
        registry: &Registry,
    ) -> Self {
        use todo_common::metrics::{counter, gauge};
        Self {
            store,
            publisher,
            cache,
            wake: Arc::new(Notify::new()),
            owner: uuid::Uuid::new_v4().to_string(),
            published: counter(registry, "events_published_total", "Task events confirmed by the broker."),
            publish_failed: counter(
                registry,
                "events_publish_failed_total",
                "Attempts to publish a task event that failed; the event stays in the outbox.",
            ),
            backlog: gauge(registry, "outbox_backlog", "Task events in the outbox not yet fully relayed."),
        }
    }

    /// The handle handlers use to wake the relay right after a commit.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Claims the oldest claimable entry and relays it.
    pub async fn process_one(&self) -> Result<RelayOutcome, StoreError> {
        let Some(mut entry) = self.store.claim_outbox(&self.owner, LEASE).await? else {
            return Ok(RelayOutcome::Empty);
        };
        let event_id = &entry.envelope.event_id;
        let user_id = &entry.envelope.user_id;

        let mut published = !entry.needs_publish;
        if entry.needs_publish {
            let span = publish_span(&entry.envelope);
            match self.publisher.publish(&entry.envelope).instrument(span.clone()).await {
                Ok(()) => {
                    self.published.inc();
                    published = true;
                }
                Err(error) => {
                    span.record("otel.status_code", "ERROR");
                    self.publish_failed.inc();
                    tracing::debug!(%error, %event_id, "event not published yet");
                }
            }
        }
        let invalidated = !entry.needs_invalidate
            || match self.cache.invalidate(&UserId::from_verified_subject(user_id)).await {
                Ok(()) => true,
                Err(error) => {
                    tracing::debug!(%error, %user_id, "list cache version not bumped yet");
                    false
                }
            };

        if published && invalidated {
            self.store.remove_outbox(&entry.id).await?;
            return Ok(RelayOutcome::Relayed);
        }
        (entry.needs_publish, entry.needs_invalidate) = (!published, !invalidated);
        self.store.defer_outbox(&entry, RETRY_DELAY).await?;
        Ok(RelayOutcome::Deferred { published })
    }

    /// Relays everything claimable now; stops early when the broker is down, since every
    /// other entry would fail the same way.
    pub async fn relay_pending(&self) -> Result<RelaySummary, StoreError> {
        self.relay_while(|| true).await
    }

    /// Like [`Relay::relay_pending`], checking `go_on` between entries: stopping between
    /// two entries never leaves one claimed (and so delayed by its lease) mid-publish.
    async fn relay_while(&self, go_on: impl Fn() -> bool) -> Result<RelaySummary, StoreError> {
        let mut summary = RelaySummary::default();
        for _ in 0..MAX_BATCH {
            if !go_on() {
                break;
            }
            match self.process_one().await? {
                RelayOutcome::Empty => break,
                RelayOutcome::Relayed => summary.relayed += 1,
                RelayOutcome::Deferred { published } => {
                    summary.deferred += 1;
                    if !published {
                        break;
                    }
                }
            }
        }
        if let Ok(backlog) = self.store.outbox_len().await {
            self.backlog.set(i64::try_from(backlog).unwrap_or(i64::MAX));
        }
        Ok(summary)
    }

    /// Entries in the outbox not yet fully relayed.
    pub async fn backlog_len(&self) -> Result<u64, StoreError> {
        self.store.outbox_len().await
    }

    /// Relays until `shutdown`, then drains what the last requests wrote for a moment.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut failing = false;
        loop {
            // Keeps the connection (and readiness) up even while there is nothing to publish.
            let _ = self.publisher.ensure_connected().await;
            match self.relay_while(|| !shutdown.is_cancelled()).await {
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!("outbox readable again");
                }
                Ok(_) => {}
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(%error, "cannot read the outbox; retrying");
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
        let deadline = tokio::time::Instant::now() + FINAL_DRAIN;
        match self.relay_while(|| tokio::time::Instant::now() < deadline).await {
            Ok(_) if tokio::time::Instant::now() >= deadline => {
                tracing::info!("outbox entries may be left for the next start or another replica")
            }
            Ok(_) => {}
            Err(error) => tracing::info!(%error, "outbox entries left for the next start or another replica"),
        }
        self.publisher.close().await;
        tracing::info!("outbox relay stopped");
    }
}
