//! Task storage: the [`TaskStore`] seam, its MongoDB implementation and an embedded one
//! ([`EmbeddedTaskStore`], redb, for the standalone mode). Every write changes the task
//! and records its event in the outbox inside one transaction, so an event exists
//! exactly when its change does.

mod embedded;

use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{doc, Bson, DateTime as BsonDateTime, Document};
use mongodb::error::{ErrorKind, TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT};
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::{ClientSession, Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};
use todo_common::events::EventType;
use todo_common::health::BackendState;
use todo_common::Problem;
use tokio::sync::OnceCell;
use tracing::Instrument;

use crate::domain::{
    ListQuery, Priority, Status, Task, TaskChanges, TaskDescription, TaskId, TaskPage, TaskTitle, Timestamp, UserId,
};
use crate::events::{EventEnvelope, EventOrigin};
use crate::outbox::{OutboxDocument, OutboxEntry, OutboxId};

pub use embedded::EmbeddedTaskStore;

pub const TASKS: &str = "tasks";
pub const OUTBOX: &str = "outbox";

/// Write conflicts (two completes of one task) are retried this often before giving up.
const MAX_TRANSACTION_ATTEMPTS: u32 = 8;
const MAX_COMMIT_ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Database(#[from] mongodb::error::Error),
    #[error("a stored task is invalid: {0}")]
    Corrupt(String),
    #[error("an event could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("embedded store: {0}")]
    Embedded(String),
}

impl From<StoreError> for Problem {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Database(e) => Problem::from(e),
            other => Problem::internal(&other),
        }
    }
}

/// The result of a write: the task as it now is (or was, for a delete), and the event
/// recorded for it; `None` when the write changed nothing (completing a completed task).
#[derive(Debug)]
pub struct Applied {
    pub task: Task,
    pub event: Option<EventType>,
}

#[async_trait]
pub trait TaskStore: Send + Sync + 'static {
    async fn create(&self, task: &Task, request_id: &str) -> Result<Applied, StoreError>;
    async fn find(&self, owner: &UserId, id: TaskId) -> Result<Option<Task>, StoreError>;
    async fn list(&self, owner: &UserId, query: &ListQuery) -> Result<TaskPage, StoreError>;
    async fn update(
        &self,
        owner: &UserId,
        id: TaskId,
        changes: &TaskChanges,
        request_id: &str,
    ) -> Result<Option<Applied>, StoreError>;
    /// Moves the task to `status` if it is not there yet; otherwise returns it unchanged with no event.
    async fn set_status(
        &self,
        owner: &UserId,
        id: TaskId,
        status: Status,
        request_id: &str,
    ) -> Result<Option<Applied>, StoreError>;
    async fn delete(&self, owner: &UserId, id: TaskId, request_id: &str) -> Result<Option<Applied>, StoreError>;

    /// Claims the oldest claimable outbox entry for `lease`, naming `lease_owner`.
    async fn claim_outbox(&self, lease_owner: &str, lease: Duration) -> Result<Option<OutboxEntry>, StoreError>;
    /// Removes a fully relayed entry.
    async fn remove_outbox(&self, id: OutboxId) -> Result<(), StoreError>;
    /// Releases an entry with what is still to be done, claimable again after `retry_in`.
    async fn defer_outbox(
        &self,
        id: OutboxId,
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

/// A task as stored. Nullable fields are kept as explicit nulls.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TaskDocument {
    #[serde(rename = "_id")]
    id: ObjectId,
    owner_id: String,
    title: String,
    description: Option<String>,
    status: Status,
    priority: Priority,
    due_date: Option<BsonDateTime>,
    created_at: BsonDateTime,
    updated_at: BsonDateTime,
    completed_at: Option<BsonDateTime>,
}

fn bson_time(t: Timestamp) -> BsonDateTime {
    BsonDateTime::from_millis(t.millis())
}

fn domain_time(t: BsonDateTime) -> Timestamp {
    Timestamp::from_millis(t.timestamp_millis())
}

impl From<&Task> for TaskDocument {
    fn from(task: &Task) -> Self {
        Self {
            id: task.id.object_id(),
            owner_id: task.owner.as_str().to_owned(),
            title: task.title.as_str().to_owned(),
            description: task.description.as_ref().map(|d| d.as_str().to_owned()),
            status: task.status,
            priority: task.priority,
            due_date: task.due_date.map(bson_time),
            created_at: bson_time(task.created_at),
            updated_at: bson_time(task.updated_at),
            completed_at: task.completed_at.map(bson_time),
        }
    }
}

impl TryFrom<TaskDocument> for Task {
    type Error = StoreError;

    fn try_from(doc: TaskDocument) -> Result<Self, StoreError> {
        let corrupt = |e: todo_common::problem::FieldError| StoreError::Corrupt(format!("{}: {}", e.field, e.message));
        Ok(Self {
            id: TaskId::from(doc.id),
            owner: UserId::from_verified_subject(&doc.owner_id),
            title: TaskTitle::parse(&doc.title).map_err(corrupt)?,
            description: doc.description.as_deref().map(TaskDescription::parse).transpose().map_err(corrupt)?,
            status: doc.status,
            priority: doc.priority,
            due_date: doc.due_date.map(domain_time),
            created_at: domain_time(doc.created_at),
            updated_at: domain_time(doc.updated_at),
            completed_at: doc.completed_at.map(domain_time),
        })
    }
}

/// One write, run (and re-run after a write conflict) inside a transaction.
enum Write<'a> {
    Create(&'a Task),
    Update(TaskId, &'a TaskChanges),
    SetStatus(TaskId, Status),
    Delete(TaskId),
}

pub struct MongoTaskStore {
    db: Database,
    tasks: Collection<TaskDocument>,
    outbox: Collection<OutboxDocument>,
    /// Set once the collections and indexes exist; see [`MongoTaskStore::schema_ready`].
    schema: OnceCell<()>,
}

impl MongoTaskStore {
    pub fn new(db: &Database) -> Self {
        Self { db: db.clone(), tasks: db.collection(TASKS), outbox: db.collection(OUTBOX), schema: OnceCell::new() }
    }

    /// Creates the collections and indexes once, before any transaction runs. A write
    /// transaction must never be the one to create a collection: besides being slower,
    /// creating a collection inside a transaction while an index build runs on it
    /// deadlocks the test backend (secantusdb). Failures are not cached, so the next
    /// call tries again.
    pub async fn schema_ready(&self) -> Result<(), mongodb::error::Error> {
        self.schema.get_or_try_init(|| self.ensure_indexes()).await.map(drop)
    }

    /// The indexes the list query and the outbox relay rely on; idempotent.
    async fn ensure_indexes(&self) -> Result<(), mongodb::error::Error> {
        let named = |keys: Document, name: &str| {
            IndexModel::builder().keys(keys).options(IndexOptions::builder().name(name.to_owned()).build()).build()
        };
        self.tasks
            .create_indexes([
                named(doc! { "ownerId": 1, "createdAt": -1, "_id": -1 }, "owner_newest_first"),
                named(doc! { "ownerId": 1, "status": 1, "createdAt": -1, "_id": -1 }, "owner_status_newest_first"),
            ])
            .await?;
        self.outbox.create_indexes([named(doc! { "leaseUntil": 1, "createdAt": 1 }, "claimable_oldest_first")]).await?;
        Ok(())
    }

    /// Runs `write` in a transaction, retrying it on a write conflict: the retry sees the
    /// winner's commit, so of N concurrent completes only one finds the task open.
    async fn transact(
        &self,
        owner: &UserId,
        write: Write<'_>,
        request_id: &str,
    ) -> Result<Option<Applied>, StoreError> {
        self.schema_ready().await?;
        // Taken here, in the request's span, so the relay's publish continues its trace.
        let origin = EventOrigin::of_request(request_id);
        let span = tracing::info_span!(
            "mongodb transaction",
            otel.kind = "client",
            db.system.name = "mongodb",
            db.collection.name = "tasks",
        );
        self.transact_in(owner, write, &origin).instrument(span).await
    }

    async fn transact_in(
        &self,
        owner: &UserId,
        write: Write<'_>,
        origin: &EventOrigin,
    ) -> Result<Option<Applied>, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut session = self.db.client().start_session().await?;
            session.start_transaction().await?;
            let outcome = match self.apply(&mut session, owner, &write, origin).await {
                Ok(applied) => commit(&mut session).await.map(|()| applied),
                Err(error) => {
                    // Best effort: the server drops an unfinished transaction on its own anyway.
                    let _ = session.abort_transaction().await;
                    Err(error)
                }
            };
            match outcome {
                Err(StoreError::Database(e)) if attempt < MAX_TRANSACTION_ATTEMPTS && is_retryable(&e, attempt) => {
                    tokio::time::sleep(conflict_backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }

    async fn apply(
        &self,
        session: &mut ClientSession,
        owner: &UserId,
        write: &Write<'_>,
        origin: &EventOrigin,
    ) -> Result<Option<Applied>, StoreError> {
        let applied = match *write {
            Write::Create(task) => {
                self.tasks.insert_one(TaskDocument::from(task)).session(&mut *session).await?;
                Some(Applied { task: task.clone(), event: Some(EventType::Created) })
            }
            Write::Update(id, changes) => {
                let updated = self
                    .tasks
                    .find_one_and_update(owned(owner, id), doc! { "$set": changes_to_set(changes) })
                    .return_document(ReturnDocument::After)
                    .session(&mut *session)
                    .await?;
                match updated {
                    Some(doc) => Some(Applied { task: doc.try_into()?, event: Some(EventType::Updated) }),
                    None => None,
                }
            }
            Write::SetStatus(id, status) => {
                let now = BsonDateTime::from_millis(Timestamp::now().millis());
                let (from, completed_at, event) = match status {
                    Status::Completed => (Status::Open, Bson::DateTime(now), EventType::Completed),
                    Status::Open => (Status::Completed, Bson::Null, EventType::Reopened),
                };
                // Conditional on the current status, so only a real transition writes (and publishes).
                let mut filter = owned(owner, id);
                filter.insert("status", from.as_str());
                let set = doc! { "status": status.as_str(), "completedAt": completed_at, "updatedAt": now };
                let changed = self
                    .tasks
                    .find_one_and_update(filter, doc! { "$set": set })
                    .return_document(ReturnDocument::After)
                    .session(&mut *session)
                    .await?;
                match changed {
                    Some(doc) => Some(Applied { task: doc.try_into()?, event: Some(event) }),
                    None => {
                        let current = self.tasks.find_one(owned(owner, id)).session(&mut *session).await?;
                        match current {
                            Some(doc) => Some(Applied { task: doc.try_into()?, event: None }),
                            None => None,
                        }
                    }
                }
            }
            Write::Delete(id) => {
                let deleted = self.tasks.find_one_and_delete(owned(owner, id)).session(&mut *session).await?;
                match deleted {
                    Some(doc) => Some(Applied { task: doc.try_into()?, event: Some(EventType::Deleted) }),
                    None => None,
                }
            }
        };
        if let Some(Applied { task, event: Some(kind) }) = &applied {
            let envelope = EventEnvelope::for_task(*kind, task, origin)?;
            self.outbox.insert_one(OutboxDocument::pending(envelope)).session(&mut *session).await?;
        }
        Ok(applied)
    }
}

/// The filter every lookup uses: the id and the owner, so another user's task is simply not found.
fn owned(owner: &UserId, id: TaskId) -> Document {
    doc! { "_id": id.object_id(), "ownerId": owner.as_str() }
}

fn changes_to_set(changes: &TaskChanges) -> Document {
    let mut set = doc! { "updatedAt": BsonDateTime::from_millis(Timestamp::now().millis()) };
    if let Some(title) = &changes.title {
        set.insert("title", title.as_str());
    }
    if let Some(description) = &changes.description {
        set.insert("description", description.as_ref().map(|d| d.as_str()));
    }
    if let Some(priority) = changes.priority {
        set.insert("priority", priority.as_str());
    }
    if let Some(due_date) = &changes.due_date {
        set.insert("dueDate", due_date.map(bson_time));
    }
    set
}

async fn commit(session: &mut ClientSession) -> Result<(), StoreError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match session.commit_transaction().await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < MAX_COMMIT_ATTEMPTS && e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Worth running the transaction again: a conflict with a concurrent transaction, or
/// (once) connections cut by the driver when a busy server answered a heartbeat late.
/// An unreachable server is not: that would only turn a quick 503 into a slow one.
fn is_retryable(error: &mongodb::error::Error, attempt: u32) -> bool {
    if !error.contains_label(TRANSIENT_TRANSACTION_ERROR) {
        return false;
    }
    match *error.kind {
        ErrorKind::ServerSelection { .. } | ErrorKind::Io(_) => false,
        ErrorKind::ConnectionPoolCleared { .. } => attempt == 1,
        _ => true,
    }
}

/// Growing, jittered pauses so conflicting writers do not retry in lockstep.
fn conflict_backoff(attempt: u32) -> Duration {
    let jitter = (uuid::Uuid::new_v4().as_u128() % 10) as u64;
    Duration::from_millis(5 * u64::from(attempt) + jitter)
}

#[async_trait]
impl TaskStore for MongoTaskStore {
    async fn create(&self, task: &Task, request_id: &str) -> Result<Applied, StoreError> {
        self.transact(&task.owner, Write::Create(task), request_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("an insert applied nothing".into()))
    }

    async fn find(&self, owner: &UserId, id: TaskId) -> Result<Option<Task>, StoreError> {
        self.tasks.find_one(owned(owner, id)).await?.map(Task::try_from).transpose()
    }

    async fn list(&self, owner: &UserId, query: &ListQuery) -> Result<TaskPage, StoreError> {
        let mut filter = doc! { "ownerId": owner.as_str() };
        if let Some(status) = query.status {
            filter.insert("status", status.as_str());
        }
        if let Some(cursor) = query.cursor {
            let created_at = bson_time(cursor.created_at);
            filter.insert(
                "$or",
                vec![
                    doc! { "createdAt": { "$lt": created_at } },
                    doc! { "createdAt": created_at, "_id": { "$lt": cursor.id.object_id() } },
                ],
            );
        }
        // One more than asked tells whether another page follows.
        let documents: Vec<TaskDocument> = self
            .tasks
            .find(filter)
            .sort(doc! { "createdAt": -1, "_id": -1 })
            .limit(i64::from(query.limit) + 1)
            .await?
            .try_collect()
            .await?;
        let items = documents.into_iter().map(Task::try_from).collect::<Result<Vec<_>, _>>()?;
        let limit = usize::try_from(query.limit).unwrap_or(usize::MAX);
        Ok(TaskPage::from_overfetch(items, limit))
    }

    async fn update(
        &self,
        owner: &UserId,
        id: TaskId,
        changes: &TaskChanges,
        request_id: &str,
    ) -> Result<Option<Applied>, StoreError> {
        self.transact(owner, Write::Update(id, changes), request_id).await
    }

    async fn set_status(
        &self,
        owner: &UserId,
        id: TaskId,
        status: Status,
        request_id: &str,
    ) -> Result<Option<Applied>, StoreError> {
        self.transact(owner, Write::SetStatus(id, status), request_id).await
    }

    async fn delete(&self, owner: &UserId, id: TaskId, request_id: &str) -> Result<Option<Applied>, StoreError> {
        self.transact(owner, Write::Delete(id), request_id).await
    }

    async fn claim_outbox(&self, lease_owner: &str, lease: Duration) -> Result<Option<OutboxEntry>, StoreError> {
        let now = BsonDateTime::now();
        let lease_until = BsonDateTime::from_millis(now.timestamp_millis() + lease.as_millis() as i64);
        let claimed = self
            .outbox
            .find_one_and_update(
                doc! { "leaseUntil": { "$lte": now } },
                doc! {
                    "$set": { "leaseUntil": lease_until, "leaseOwner": lease_owner },
                    "$inc": { "attempts": 1 },
                },
            )
            .sort(doc! { "createdAt": 1 })
            .return_document(ReturnDocument::After)
            .await?;
        Ok(claimed.map(|entry| entry.entry()))
    }

    async fn remove_outbox(&self, id: OutboxId) -> Result<(), StoreError> {
        self.outbox.delete_one(doc! { "_id": mongo_outbox_id(id)? }).await?;
        Ok(())
    }

    async fn defer_outbox(
        &self,
        id: OutboxId,
        needs_publish: bool,
        needs_invalidate: bool,
        retry_in: Duration,
    ) -> Result<(), StoreError> {
        let retry_at = BsonDateTime::from_millis(BsonDateTime::now().timestamp_millis() + retry_in.as_millis() as i64);
        self.outbox
            .update_one(
                doc! { "_id": mongo_outbox_id(id)? },
                doc! { "$set": {
                    "needsPublish": needs_publish,
                    "needsInvalidate": needs_invalidate,
                    "leaseUntil": retry_at,
                    "leaseOwner": null,
                } },
            )
            .await?;
        Ok(())
    }

    async fn outbox_len(&self) -> Result<u64, StoreError> {
        Ok(self.outbox.count_documents(doc! {}).await?)
    }

    async fn prepare(&self) -> Result<(), StoreError> {
        Ok(self.schema_ready().await?)
    }

    fn backend_name(&self) -> &'static str {
        "mongodb"
    }

    async fn ping(&self) -> BackendState {
        todo_common::mongo::ping(&self.db).await
    }
}

fn mongo_outbox_id(id: OutboxId) -> Result<ObjectId, StoreError> {
    match id {
        OutboxId::Mongo(id) => Ok(id),
        OutboxId::Embedded(_) => Err(StoreError::Corrupt("an embedded outbox id given to MongoDB".into())),
    }
}
