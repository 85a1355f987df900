//! Task storage: the [`TaskStore`] seam, its MongoDB implementation and an embedded one
//! ([`EmbeddedTaskStore`], redb, for the standalone mode). Every write changes the task
//! and records its event in the outbox inside one transaction, so an event exists
//! exactly when its change does. What a write does is the domain's
//! ([`Task::apply`](crate::domain::Task::apply)); a store only reads, applies and keeps.

#[cfg(feature = "embedded")]
mod embedded;
mod mongo;

use std::time::Duration;

use async_trait::async_trait;
use todo_common::health::BackendState;
pub use todo_common::store::StoreError;

use crate::domain::{Applied, ListQuery, Task, TaskId, TaskPage, UserId, Write};
use crate::events::{EventEnvelope, EventOrigin};

#[cfg(feature = "embedded")]
pub use embedded::EmbeddedTaskStore;
pub use mongo::MongoTaskStore;

#[async_trait]
pub trait TaskStore: Send + Sync + 'static {
    /// Stores a task just created, with its event.
    async fn create(&self, created: &Applied, origin: &EventOrigin) -> Result<(), StoreError>;
    async fn find(&self, owner: &UserId, id: TaskId) -> Result<Option<Task>, StoreError>;
    async fn list(&self, owner: &UserId, query: &ListQuery) -> Result<TaskPage, StoreError>;
    /// Applies `write` to the owner's task `id`, with its event if it makes one, in one
    /// transaction; `None` when the owner has no such task.
    async fn change(
        &self,
        owner: &UserId,
        id: TaskId,
        write: &Write,
        origin: &EventOrigin,
    ) -> Result<Option<Applied>, StoreError>;

    /// Claims the oldest claimable outbox entry for `lease`, naming `lease_owner`.
    async fn claim_outbox(&self, lease_owner: &str, lease: Duration) -> Result<Option<OutboxEntry>, StoreError>;
    /// Removes a fully relayed entry.
    async fn remove_outbox(&self, id: &OutboxId) -> Result<(), StoreError>;
    /// Releases an entry with what is still to be done, claimable again after `retry_in`.
    async fn defer_outbox(
        &self,
        id: &OutboxId,
        needs_publish: bool,
        needs_invalidate: bool,
        retry_in: Duration,
    ) -> Result<(), StoreError>;
    /// Entries in the outbox.
    async fn outbox_len(&self) -> Result<u64, StoreError>;

    /// Prepares the schema (collections, indexes); retried by the caller until it works.
    async fn prepare(&self) -> Result<(), StoreError>;
    /// The backend's name in `/readyz`.
    fn backend_name(&self) -> &'static str;
    async fn ping(&self) -> BackendState;
}

/// Names one outbox entry in the store that claimed it; only that store reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxId(String);

impl OutboxId {
    fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }
    fn as_str(&self) -> &str {
        &self.0
    }
}

/// A claimed outbox entry: its event and what is still to be done for it.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    pub id: OutboxId,
    pub envelope: EventEnvelope,
    /// Not yet confirmed by the broker.
    pub needs_publish: bool,
    /// The owner's list-cache version not yet bumped by the relay.
    pub needs_invalidate: bool,
}

/// The outbox entry `applied` calls for, if its write made an event.
fn outbox_event(applied: &Applied, origin: &EventOrigin) -> Result<Option<EventEnvelope>, StoreError> {
    applied
        .event
        .map(|event| EventEnvelope::for_task(&applied.task, event, origin).map_err(StoreError::unexpected))
        .transpose()
}
