//! Tasks and their outbox in MongoDB: a write runs in a transaction (re-run on a write
//! conflict) that reads the task, applies the domain's change, writes it back only if
//! nobody changed it meanwhile, and inserts the event into the `outbox` collection.

use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{doc, DateTime as BsonDateTime, Document};
use mongodb::error::{ErrorKind, TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT};
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::{ClientSession, Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};
use todo_common::backoff::Backoff;
use todo_common::health::BackendState;
use tokio::sync::OnceCell;
use tracing::Instrument;

use super::{outbox_event, OutboxEntry, OutboxId, StoreError, TaskRecord, TaskStore};
use crate::domain::{Applied, Change, ListQuery, Task, TaskId, TaskPage, Timestamp, UserId, Write};
use crate::events::{EventEnvelope, EventOrigin};

pub const TASKS: &str = "tasks";
pub const OUTBOX: &str = "outbox";

/// Write conflicts (two completes of one task) are retried this often before giving up.
const MAX_TRANSACTION_ATTEMPTS: u32 = 8;
/// Between attempts after a conflict: short, growing and jittered, so that conflicting
/// writers do not retry in step.
const CONFLICT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_millis(80));
const MAX_COMMIT_ATTEMPTS: u32 = 3;

type TaskDocument = TaskRecord<ObjectId, BsonDateTime>;

impl From<&Task> for TaskDocument {
    fn from(task: &Task) -> Self {
        Self::of(task, |id| id.object_id(), BsonDateTime::from)
    }
}

impl TryFrom<TaskDocument> for Task {
    type Error = StoreError;

    fn try_from(doc: TaskDocument) -> Result<Self, StoreError> {
        doc.into_task(|id| Some(TaskId::from(*id)), Timestamp::from)
    }
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
    async fn transact(&self, write: Transaction<'_>, origin: &EventOrigin) -> Result<Option<Applied>, StoreError> {
        self.schema_ready().await?;
        let span = tracing::info_span!(
            "mongodb transaction",
            otel.kind = "client",
            db.system.name = "mongodb",
            db.collection.name = "tasks",
        );
        self.transact_in(write, origin).instrument(span).await
    }

    async fn transact_in(&self, write: Transaction<'_>, origin: &EventOrigin) -> Result<Option<Applied>, StoreError> {
        let mut backoff = Backoff::new(CONFLICT_BACKOFF.0, CONFLICT_BACKOFF.1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut session = self.db.client().start_session().await?;
            session.start_transaction().await?;
            let outcome = match self.apply(&mut session, &write, origin).await {
                Ok(applied) => commit(&mut session).await.map(|()| applied),
                Err(error) => {
                    // Best effort: the server drops an unfinished transaction on its own anyway.
                    let _ = session.abort_transaction().await;
                    Err(error)
                }
            };
            match outcome {
                Err(failure) if attempt < MAX_TRANSACTION_ATTEMPTS && failure.is_retryable(attempt) => {
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(failure) => return Err(failure.into()),
                Ok(applied) => return Ok(applied),
            }
        }
    }

    async fn apply(
        &self,
        session: &mut ClientSession,
        write: &Transaction<'_>,
        origin: &EventOrigin,
    ) -> Result<Option<Applied>, Failure> {
        let applied = match *write {
            Transaction::Create(created) => {
                self.tasks.insert_one(TaskDocument::from(&created.task)).session(&mut *session).await?;
                created.clone()
            }
            Transaction::Change(Change { owner, id, write }) => {
                let Some(stored) = self.tasks.find_one(owned(owner, *id)).session(&mut *session).await? else {
                    return Ok(None);
                };
                let before = Task::try_from(stored)?;
                let unchanged = unchanged_since(&before);
                let applied = before.apply(write, Timestamp::now());
                if applied.event.is_some() {
                    let kept = match write {
                        Write::Delete => self.tasks.delete_one(unchanged).session(&mut *session).await?.deleted_count,
                        _ => {
                            let document = TaskDocument::from(&applied.task);
                            self.tasks.replace_one(unchanged, document).session(&mut *session).await?.matched_count
                        }
                    };
                    if kept == 0 {
                        return Err(Failure::Raced);
                    }
                }
                applied
            }
        };
        if let Some(envelope) = outbox_event(&applied, origin)? {
            self.outbox.insert_one(OutboxDocument::pending(envelope)).session(&mut *session).await?;
        }
        Ok(Some(applied))
    }
}

/// One transaction's write, run (and re-run after a conflict) inside it.
enum Transaction<'a> {
    Create(&'a Applied),
    Change(&'a Change),
}

/// Why one attempt at a transaction failed.
enum Failure {
    Database(mongodb::error::Error),
    /// Another transaction changed the task between this one's read and write.
    Raced,
    Store(StoreError),
}

impl Failure {
    /// Worth running the transaction again: a conflict with a concurrent transaction, or
    /// (once) connections cut by the driver when a busy server answered a heartbeat late.
    /// An unreachable server is not: that would only turn a quick 503 into a slow one.
    fn is_retryable(&self, attempt: u32) -> bool {
        let Self::Database(error) = self else {
            return matches!(self, Self::Raced);
        };
        if !error.contains_label(TRANSIENT_TRANSACTION_ERROR) {
            return false;
        }
        match *error.kind {
            ErrorKind::ServerSelection { .. } | ErrorKind::Io(_) => false,
            ErrorKind::ConnectionPoolCleared { .. } => attempt == 1,
            _ => true,
        }
    }
}

impl From<mongodb::error::Error> for Failure {
    fn from(error: mongodb::error::Error) -> Self {
        Self::Database(error)
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

impl From<Failure> for StoreError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Database(error) => error.into(),
            Failure::Raced => StoreError::Unavailable("the task kept changing under concurrent writes".into()),
            Failure::Store(error) => error,
        }
    }
}

/// The filter every lookup uses: the id and the owner, so another user's task is simply not found.
fn owned(owner: &UserId, id: TaskId) -> Document {
    doc! { "_id": id.object_id(), "ownerId": owner.as_str() }
}

/// The task as `before` was read: a write under this filter finds nothing if another
/// transaction has since moved the task to another status or update time. Two changes
/// within one millisecond that keep the status pass it; MongoDB's own write conflict
/// (snapshot isolation) is what stops those.
fn unchanged_since(before: &Task) -> Document {
    let mut filter = owned(&before.owner, before.id);
    filter.insert("status", before.status.as_str());
    filter.insert("updatedAt", BsonDateTime::from(before.updated_at));
    filter
}

async fn commit(session: &mut ClientSession) -> Result<(), Failure> {
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

#[async_trait]
impl TaskStore for MongoTaskStore {
    async fn create(&self, created: &Applied, origin: &EventOrigin) -> Result<(), StoreError> {
        self.transact(Transaction::Create(created), origin).await.map(drop)
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
            let created_at = BsonDateTime::from(cursor.at);
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

    async fn change(&self, change: &Change, origin: &EventOrigin) -> Result<Option<Applied>, StoreError> {
        self.transact(Transaction::Change(change), origin).await
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
        Ok(claimed.map(OutboxDocument::into_entry))
    }

    async fn remove_outbox(&self, id: &OutboxId) -> Result<(), StoreError> {
        self.outbox.delete_one(doc! { "_id": outbox_object_id(id)? }).await?;
        Ok(())
    }

    async fn defer_outbox(&self, entry: &OutboxEntry, retry_in: Duration) -> Result<(), StoreError> {
        let retry_at = BsonDateTime::from_millis(BsonDateTime::now().timestamp_millis() + retry_in.as_millis() as i64);
        self.outbox
            .update_one(
                doc! { "_id": outbox_object_id(&entry.id)? },
                doc! { "$set": {
                    "needsPublish": entry.needs_publish,
                    "needsInvalidate": entry.needs_invalidate,
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

fn outbox_object_id(id: &OutboxId) -> Result<ObjectId, StoreError> {
    ObjectId::parse_str(id.as_str()).map_err(StoreError::unexpected)
}

/// One pending event, the envelope whole (its time a BSON date), with what is still to be
/// done.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OutboxDocument {
    #[serde(rename = "_id")]
    id: ObjectId,
    #[serde(flatten)]
    envelope: EventEnvelope<BsonDateTime>,
    /// Not yet confirmed by the broker.
    needs_publish: bool,
    /// The owner's list-cache version not yet bumped by the relay.
    needs_invalidate: bool,
    /// Claimable once this has passed.
    lease_until: BsonDateTime,
    lease_owner: Option<String>,
    attempts: i32,
    created_at: BsonDateTime,
}

impl OutboxDocument {
    fn pending(envelope: EventEnvelope) -> Self {
        let now = BsonDateTime::now();
        Self {
            id: ObjectId::new(),
            envelope: envelope.with_time(BsonDateTime::from),
            needs_publish: true,
            needs_invalidate: true,
            lease_until: now,
            lease_owner: None,
            attempts: 0,
            created_at: now,
        }
    }

    fn into_entry(self) -> OutboxEntry {
        OutboxEntry {
            id: OutboxId::new(self.id.to_hex()),
            envelope: self.envelope.with_time(Timestamp::from),
            needs_publish: self.needs_publish,
            needs_invalidate: self.needs_invalidate,
        }
    }
}
