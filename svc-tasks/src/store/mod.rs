//! Task storage: the [`TaskStore`] seam, its MongoDB implementation and an embedded one
//! ([`EmbeddedTaskStore`], redb, for the standalone mode). Every write changes the task
//! and records its event in the outbox inside one transaction, so an event exists
//! exactly when its change does. What a write does is the domain's
//! ([`Task::apply`](crate::domain::Task::apply)); a store only reads, applies and keeps.

#[cfg(feature = "embedded")]
mod embedded;
mod mongo;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use todo_common::health::BackendState;
use todo_common::problem::FieldError;
pub use todo_common::store::StoreError;

use crate::domain::{
    Applied, Change, ListQuery, Priority, Status, Task, TaskDescription, TaskId, TaskPage, TaskTitle, Timestamp, UserId,
};
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
    /// Applies the change's write to the owner's task, with its event if it makes one, in
    /// one transaction; `None` when the owner has no such task.
    async fn change(&self, change: &Change, origin: &EventOrigin) -> Result<Option<Applied>, StoreError>;

    /// Claims the oldest claimable outbox entry for `lease`, naming `lease_owner`.
    async fn claim_outbox(&self, lease_owner: &str, lease: Duration) -> Result<Option<OutboxEntry>, StoreError>;
    /// Removes a fully relayed entry.
    async fn remove_outbox(&self, id: &OutboxId) -> Result<(), StoreError>;
    /// Releases `entry`, keeping what its flags say is still to be done, claimable again
    /// after `retry_in`.
    async fn defer_outbox(&self, entry: &OutboxEntry, retry_in: Duration) -> Result<(), StoreError>;
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

/// A task as a store keeps it, in the backend's own id and time types (MongoDB: an
/// ObjectId and BSON dates; the embedded store: hex text and epoch milliseconds).
/// Nullable fields are kept as explicit nulls.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TaskRecord<Id, Time> {
    /// `id` in embedded files written before the record was shared.
    #[serde(rename = "_id", alias = "id")]
    id: Id,
    owner_id: String,
    title: String,
    description: Option<String>,
    status: Status,
    priority: Priority,
    due_date: Option<Time>,
    created_at: Time,
    updated_at: Time,
    completed_at: Option<Time>,
}

impl<Id: fmt::Debug, Time> TaskRecord<Id, Time> {
    fn of(task: &Task, id: impl Fn(TaskId) -> Id, time: impl Fn(Timestamp) -> Time) -> Self {
        Self {
            id: id(task.id),
            owner_id: task.owner.as_str().to_owned(),
            title: task.title.as_str().to_owned(),
            description: task.description.as_ref().map(|d| d.as_str().to_owned()),
            status: task.status,
            priority: task.priority,
            due_date: task.due_date.map(&time),
            created_at: time(task.created_at),
            updated_at: time(task.updated_at),
            completed_at: task.completed_at.map(&time),
        }
    }

    /// The task, its values checked again as at its creation.
    fn into_task(
        self,
        id: impl Fn(&Id) -> Option<TaskId>,
        time: impl Fn(Time) -> Timestamp,
    ) -> Result<Task, StoreError> {
        let corrupt = |what: String| StoreError::unexpected(anyhow::anyhow!("stored task {:?}: {what}", self.id));
        let field = |e: FieldError| corrupt(format!("{}: {}", e.field, e.message));
        Ok(Task {
            id: id(&self.id).ok_or_else(|| corrupt("bad id".into()))?,
            owner: UserId::from_verified_subject(&self.owner_id),
            title: TaskTitle::parse(&self.title).map_err(field)?,
            description: self.description.as_deref().map(TaskDescription::parse).transpose().map_err(field)?,
            status: self.status,
            priority: self.priority,
            due_date: self.due_date.map(&time),
            created_at: time(self.created_at),
            updated_at: time(self.updated_at),
            completed_at: self.completed_at.map(&time),
        })
    }
}

/// The outbox entry `applied` calls for, if its write made an event.
fn outbox_event(applied: &Applied, origin: &EventOrigin) -> Result<Option<EventEnvelope>, StoreError> {
    applied
        .event
        .map(|event| EventEnvelope::for_task(&applied.task, event, origin).map_err(StoreError::unexpected))
        .transpose()
}
