//! Tasks and their outbox in an embedded redb file (`tasks.redb`), for the standalone mode.
//!
//! Tables: `tasks` (id hex → JSON), `tasks_by_owner` ((owner, createdAt millis, id hex) →
//! (): the MongoDB store's newest-first order and cursor, walked backwards), `outbox`
//! (sequence number → JSON entry, oldest first) and `meta` (the outbox sequence). Every
//! write runs in one redb write transaction holding the task change and its outbox entry;
//! redb serializes write transactions, so of two concurrent completes only one finds the
//! task open. Commits are durable (redb's default); every call runs on the blocking pool.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use todo_common::embedded::{decode, encode, store_error, EmbeddedDb};
use todo_common::health::BackendState;

use super::{outbox_event, OutboxEntry, OutboxId, StoreError, TaskRecord, TaskStore};
use crate::domain::{Applied, Change, Cursor, ListQuery, Task, TaskId, TaskPage, Timestamp, UserId, Write};
use crate::events::{EventEnvelope, EventOrigin};

const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
const BY_OWNER: TableDefinition<(&str, i64, &str), ()> = TableDefinition::new("tasks_by_owner");
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const OUTBOX_SEQUENCE: &str = "outbox_sequence";
/// Sorts after every id (lower-case hex), so a range can include all of a millisecond.
const AFTER_EVERY_ID: &str = "~";

type StoredTask = TaskRecord<String, i64>;

impl From<&Task> for StoredTask {
    fn from(task: &Task) -> Self {
        Self::of(task, |id| id.to_string(), |t| t.millis())
    }
}

impl TryFrom<StoredTask> for Task {
    type Error = StoreError;

    fn try_from(stored: StoredTask) -> Result<Self, StoreError> {
        stored.into_task(|id| TaskId::parse(id), Timestamp::from_millis)
    }
}

/// One pending event, the envelope whole, with what is still to be done (the fields of
/// the MongoDB outbox's documents).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredOutboxEntry {
    #[serde(flatten)]
    envelope: EventEnvelope<i64>,
    needs_publish: bool,
    needs_invalidate: bool,
    lease_until: i64,
    lease_owner: Option<String>,
    attempts: u32,
}

impl StoredOutboxEntry {
    fn pending(envelope: EventEnvelope) -> Self {
        let envelope = envelope.with_time(|at| at.millis());
        Self { envelope, needs_publish: true, needs_invalidate: true, lease_until: 0, lease_owner: None, attempts: 0 }
    }

    fn entry(&self, sequence: u64) -> OutboxEntry {
        OutboxEntry {
            id: OutboxId::new(sequence.to_string()),
            envelope: self.envelope.clone().with_time(Timestamp::from_millis),
            needs_publish: self.needs_publish,
            needs_invalidate: self.needs_invalidate,
        }
    }
}

pub struct EmbeddedTaskStore {
    db: EmbeddedDb,
}

impl EmbeddedTaskStore {
    /// Opens (or creates) the database file and its tables.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let db = EmbeddedDb::open(path, |txn| {
            txn.open_table(TASKS)?;
            txn.open_table(BY_OWNER)?;
            txn.open_table(OUTBOX)?;
            txn.open_table(META)?;
            Ok(())
        })?;
        Ok(Self { db })
    }

    /// Runs `write` and records its event in one write transaction.
    async fn transact(&self, write: Transaction, origin: &EventOrigin) -> Result<Option<Applied>, StoreError> {
        let origin = origin.clone();
        self.db
            .blocking(move |db| {
                let txn = db.begin_write().map_err(store_error)?;
                let applied = apply(&txn, write)?;
                if let Some(envelope) = applied.as_ref().map(|a| outbox_event(a, &origin)).transpose()?.flatten() {
                    let mut meta = txn.open_table(META).map_err(store_error)?;
                    let sequence = meta.get(OUTBOX_SEQUENCE).map_err(store_error)?.map_or(0, |s| s.value()) + 1;
                    meta.insert(OUTBOX_SEQUENCE, sequence).map_err(store_error)?;
                    let mut outbox = txn.open_table(OUTBOX).map_err(store_error)?;
                    let entry = encode(&StoredOutboxEntry::pending(envelope))?;
                    outbox.insert(sequence, entry.as_slice()).map_err(store_error)?;
                }
                txn.commit().map_err(store_error)?;
                Ok(applied)
            })
            .await
    }

    /// Rewrites one outbox entry (or removes it) in a write transaction.
    async fn update_outbox(
        &self,
        id: &OutboxId,
        change: impl FnOnce(&mut StoredOutboxEntry) + Send + 'static,
        remove: bool,
    ) -> Result<(), StoreError> {
        let sequence: u64 = id.as_str().parse().map_err(store_error)?;
        self.db
            .blocking(move |db| {
                let txn = db.begin_write().map_err(store_error)?;
                {
                    let mut outbox = txn.open_table(OUTBOX).map_err(store_error)?;
                    if remove {
                        outbox.remove(sequence).map_err(store_error)?;
                    } else {
                        let stored =
                            outbox.get(sequence).map_err(store_error)?.map(|b| decode(b.value())).transpose()?;
                        if let Some(mut stored) = stored {
                            change(&mut stored);
                            outbox.insert(sequence, encode(&stored)?.as_slice()).map_err(store_error)?;
                        }
                    }
                }
                txn.commit().map_err(store_error)
            })
            .await
    }
}

/// The owner's task `id`, or `None` (another owner's task is simply not found).
fn owned_task(txn: &WriteTransaction, owner: &UserId, id: TaskId) -> Result<Option<Task>, StoreError> {
    let tasks = txn.open_table(TASKS).map_err(store_error)?;
    let Some(bytes) = tasks.get(id.to_string().as_str()).map_err(store_error)? else {
        return Ok(None);
    };
    let task = Task::try_from(decode::<StoredTask>(bytes.value())?)?;
    Ok((task.owner == *owner).then_some(task))
}

fn put_task(txn: &WriteTransaction, task: &Task) -> Result<(), StoreError> {
    let id = task.id.to_string();
    let mut tasks = txn.open_table(TASKS).map_err(store_error)?;
    tasks.insert(id.as_str(), encode(&StoredTask::from(task))?.as_slice()).map_err(store_error)?;
    let mut by_owner = txn.open_table(BY_OWNER).map_err(store_error)?;
    by_owner.insert((task.owner.as_str(), task.created_at.millis(), id.as_str()), ()).map_err(store_error)?;
    Ok(())
}

/// One transaction's write, moved onto the blocking pool.
enum Transaction {
    Create(Applied),
    Change(Change),
}

fn apply(txn: &WriteTransaction, write: Transaction) -> Result<Option<Applied>, StoreError> {
    match write {
        Transaction::Create(created) => {
            put_task(txn, &created.task)?;
            Ok(Some(created))
        }
        Transaction::Change(Change { owner, id, write }) => {
            let Some(before) = owned_task(txn, &owner, id)? else {
                return Ok(None);
            };
            let applied = before.apply(&write, Timestamp::now());
            match (&write, applied.event) {
                (_, None) => {}
                (Write::Delete, Some(_)) => remove_task(txn, &applied.task)?,
                (_, Some(_)) => put_task(txn, &applied.task)?,
            }
            Ok(Some(applied))
        }
    }
}

fn remove_task(txn: &WriteTransaction, task: &Task) -> Result<(), StoreError> {
    let id = task.id.to_string();
    txn.open_table(TASKS).map_err(store_error)?.remove(id.as_str()).map_err(store_error)?;
    let mut by_owner = txn.open_table(BY_OWNER).map_err(store_error)?;
    by_owner.remove((task.owner.as_str(), task.created_at.millis(), id.as_str())).map_err(store_error)?;
    Ok(())
}

fn now_millis() -> i64 {
    Timestamp::now().millis()
}

#[async_trait]
impl TaskStore for EmbeddedTaskStore {
    async fn create(&self, created: &Applied, origin: &EventOrigin) -> Result<(), StoreError> {
        self.transact(Transaction::Create(created.clone()), origin).await.map(drop)
    }

    async fn find(&self, owner: &UserId, id: TaskId) -> Result<Option<Task>, StoreError> {
        let owner = owner.clone();
        self.db
            .blocking(move |db| {
                let txn = db.begin_read().map_err(store_error)?;
                let tasks = txn.open_table(TASKS).map_err(store_error)?;
                let Some(bytes) = tasks.get(id.to_string().as_str()).map_err(store_error)? else {
                    return Ok(None);
                };
                let task = Task::try_from(decode::<StoredTask>(bytes.value())?)?;
                Ok((task.owner == owner).then_some(task))
            })
            .await
    }

    async fn list(&self, owner: &UserId, query: &ListQuery) -> Result<TaskPage, StoreError> {
        let (owner, query) = (owner.clone(), query.clone());
        self.db
            .blocking(move |db| {
                let txn = db.begin_read().map_err(store_error)?;
                let by_owner = txn.open_table(BY_OWNER).map_err(store_error)?;
                let tasks = txn.open_table(TASKS).map_err(store_error)?;
                let low = (owner.as_str(), i64::MIN, "");
                let cursor_id = query.cursor.map(|c: Cursor| c.id.to_string());
                let entries = match (query.cursor, &cursor_id) {
                    (Some(cursor), Some(id)) => by_owner.range(low..(owner.as_str(), cursor.at.millis(), id.as_str())),
                    _ => by_owner.range(low..=(owner.as_str(), i64::MAX, AFTER_EVERY_ID)),
                }
                .map_err(store_error)?;
                // One more than asked tells whether another page follows.
                let limit = usize::try_from(query.limit).unwrap_or(usize::MAX);
                let mut items = Vec::new();
                for entry in entries.rev() {
                    let (key, _) = entry.map_err(store_error)?;
                    let (_, _, id) = key.value();
                    let Some(bytes) = tasks.get(id).map_err(store_error)? else { continue };
                    let task = Task::try_from(decode::<StoredTask>(bytes.value())?)?;
                    if query.status.is_none_or(|status| status == task.status) {
                        items.push(task);
                        if items.len() > limit {
                            break;
                        }
                    }
                }
                Ok(TaskPage::from_overfetch(items, limit))
            })
            .await
    }

    async fn change(&self, change: &Change, origin: &EventOrigin) -> Result<Option<Applied>, StoreError> {
        self.transact(Transaction::Change(change.clone()), origin).await
    }

    async fn claim_outbox(&self, lease_owner: &str, lease: Duration) -> Result<Option<OutboxEntry>, StoreError> {
        let lease_owner = lease_owner.to_owned();
        self.db
            .blocking(move |db| {
                let now = now_millis();
                let txn = db.begin_write().map_err(store_error)?;
                let claimed = {
                    let mut outbox = txn.open_table(OUTBOX).map_err(store_error)?;
                    let mut claimable = None;
                    for entry in outbox.iter().map_err(store_error)? {
                        let (sequence, bytes) = entry.map_err(store_error)?;
                        let stored: StoredOutboxEntry = decode(bytes.value())?;
                        if stored.lease_until <= now {
                            claimable = Some((sequence.value(), stored));
                            break;
                        }
                    }
                    match claimable {
                        Some((sequence, mut stored)) => {
                            stored.lease_until = now + i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
                            stored.lease_owner = Some(lease_owner);
                            stored.attempts += 1;
                            outbox.insert(sequence, encode(&stored)?.as_slice()).map_err(store_error)?;
                            Some(stored.entry(sequence))
                        }
                        None => None,
                    }
                };
                txn.commit().map_err(store_error)?;
                Ok(claimed)
            })
            .await
    }

    async fn remove_outbox(&self, id: &OutboxId) -> Result<(), StoreError> {
        self.update_outbox(id, |_| {}, true).await
    }

    async fn defer_outbox(&self, entry: &OutboxEntry, retry_in: Duration) -> Result<(), StoreError> {
        let retry_at = now_millis() + i64::try_from(retry_in.as_millis()).unwrap_or(i64::MAX / 2);
        let (needs_publish, needs_invalidate) = (entry.needs_publish, entry.needs_invalidate);
        self.update_outbox(
            &entry.id,
            move |stored| {
                stored.needs_publish = needs_publish;
                stored.needs_invalidate = needs_invalidate;
                stored.lease_until = retry_at;
                stored.lease_owner = None;
            },
            false,
        )
        .await
    }

    async fn outbox_len(&self) -> Result<u64, StoreError> {
        self.db
            .blocking(|db| {
                let txn = db.begin_read().map_err(store_error)?;
                let outbox = txn.open_table(OUTBOX).map_err(store_error)?;
                outbox.len().map_err(store_error)
            })
            .await
    }

    /// The tables are created when the file is opened.
    async fn prepare(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn backend_name(&self) -> &'static str {
        "redb"
    }

    async fn ping(&self) -> BackendState {
        match self.db.blocking(|db| db.begin_read().map(drop).map_err(store_error)).await {
            Ok(()) => BackendState::Up,
            Err(error) => BackendState::Down { detail: error.to_string() },
        }
    }
}
