//! Notifications in an embedded redb file (`notify.redb`), for the standalone mode.
//!
//! Tables: `notifications` (id hex → JSON), `notifications_by_event` (event id → id hex:
//! an event is stored once, checked in the same write transaction as the insert) and
//! `notifications_by_user` ((user, createdAt millis, id hex) → (): the newest-first
//! order and cursor of the MongoDB store, walked backwards). Commits are durable (redb's
//! default); every call runs on the blocking pool.

use std::path::Path;

use async_trait::async_trait;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use todo_common::embedded::{decode, encode, store_error, EmbeddedDb};
use todo_common::health::BackendState;
use todo_common::time::Timestamp;

use super::{Inserted, NotificationRecord, NotificationStore, StoreError};
use crate::domain::{ListQuery, NewNotification, Notification, NotificationId, Page, ReadFilter, UserId};

const NOTIFICATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("notifications");
const BY_EVENT: TableDefinition<&str, &str> = TableDefinition::new("notifications_by_event");
const BY_USER: TableDefinition<(&str, i64, &str), ()> = TableDefinition::new("notifications_by_user");
/// Sorts after every id (lower-case hex), so a range can include all of a millisecond.
const AFTER_EVERY_ID: &str = "~";

type StoredNotification = NotificationRecord<String, i64>;

impl StoredNotification {
    fn into_notification(self) -> Result<Notification, StoreError> {
        self.into_domain(|id| NotificationId::parse(id), Timestamp::from_millis)
    }
}

pub struct EmbeddedNotificationStore {
    db: EmbeddedDb,
}

impl EmbeddedNotificationStore {
    /// Opens (or creates) the database file and its tables.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let db = EmbeddedDb::open(path, |txn| {
            txn.open_table(NOTIFICATIONS)?;
            txn.open_table(BY_EVENT)?;
            txn.open_table(BY_USER)?;
            Ok(())
        })?;
        Ok(Self { db })
    }
}

#[async_trait]
impl NotificationStore for EmbeddedNotificationStore {
    /// The tables are created when the file is opened.
    async fn ensure_indexes(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn insert(&self, notification: &NewNotification) -> Result<Inserted, StoreError> {
        let stored =
            StoredNotification::unread(notification, notification.id.to_string(), notification.created_at.millis());
        self.db
            .blocking(move |db| {
                let bytes = encode(&stored)?;
                let txn = db.begin_write().map_err(store_error)?;
                {
                    let mut by_event = txn.open_table(BY_EVENT).map_err(store_error)?;
                    if by_event.get(stored.event_id.as_str()).map_err(store_error)?.is_some() {
                        return Ok(Inserted::Duplicate);
                    }
                    by_event.insert(stored.event_id.as_str(), stored.id.as_str()).map_err(store_error)?;
                    let mut notifications = txn.open_table(NOTIFICATIONS).map_err(store_error)?;
                    notifications.insert(stored.id.as_str(), bytes.as_slice()).map_err(store_error)?;
                    let mut by_user = txn.open_table(BY_USER).map_err(store_error)?;
                    by_user
                        .insert((stored.user_id.as_str(), stored.created_at, stored.id.as_str()), ())
                        .map_err(store_error)?;
                }
                txn.commit().map_err(store_error)?;
                Ok(Inserted::Created)
            })
            .await
    }

    async fn list(&self, user: &UserId, query: &ListQuery) -> Result<Page, StoreError> {
        let (user, query) = (user.as_str().to_owned(), query.clone());
        self.db
            .blocking(move |db| {
                let txn = db.begin_read().map_err(store_error)?;
                let by_user = txn.open_table(BY_USER).map_err(store_error)?;
                let notifications = txn.open_table(NOTIFICATIONS).map_err(store_error)?;
                let low = (user.as_str(), i64::MIN, "");
                let cursor_id = query.after.map(|c| c.id.to_string());
                let entries = match (query.after, &cursor_id) {
                    (Some(cursor), Some(id)) => by_user.range(low..(user.as_str(), cursor.at.millis(), id.as_str())),
                    _ => by_user.range(low..=(user.as_str(), i64::MAX, AFTER_EVERY_ID)),
                }
                .map_err(store_error)?;
                // One extra item tells whether another page follows.
                let wanted = query.limit as usize + 1;
                let mut items = Vec::new();
                for entry in entries.rev() {
                    let (key, _) = entry.map_err(store_error)?;
                    let (_, _, id) = key.value();
                    let Some(bytes) = notifications.get(id).map_err(store_error)? else { continue };
                    let notification = decode::<StoredNotification>(bytes.value())?.into_notification()?;
                    let wanted_state = match query.filter {
                        ReadFilter::All => true,
                        ReadFilter::UnreadOnly => !notification.read,
                        ReadFilter::ReadOnly => notification.read,
                    };
                    if wanted_state {
                        items.push(notification);
                        if items.len() == wanted {
                            break;
                        }
                    }
                }
                Ok(Page::from_overfetch(items, query.limit as usize))
            })
            .await
    }

    async fn mark_read(&self, user: &UserId, id: NotificationId) -> Result<Option<Notification>, StoreError> {
        let (user, id) = (user.as_str().to_owned(), id.to_string());
        self.db
            .blocking(move |db| {
                let txn = db.begin_write().map_err(store_error)?;
                let updated = {
                    let mut notifications = txn.open_table(NOTIFICATIONS).map_err(store_error)?;
                    let found = notifications
                        .get(id.as_str())
                        .map_err(store_error)?
                        .map(|b| decode::<StoredNotification>(b.value()));
                    match found.transpose()? {
                        Some(mut stored) if stored.user_id == user => {
                            stored.read = true;
                            let bytes = encode(&stored)?;
                            notifications.insert(id.as_str(), bytes.as_slice()).map_err(store_error)?;
                            Some(stored)
                        }
                        _ => None,
                    }
                };
                txn.commit().map_err(store_error)?;
                updated.map(StoredNotification::into_notification).transpose()
            })
            .await
    }

    fn backend_name(&self) -> &'static str {
        "redb"
    }

    async fn health(&self) -> BackendState {
        match self.db.blocking(|db| db.begin_read().map(drop).map_err(store_error)).await {
            Ok(()) => BackendState::Up,
            Err(error) => BackendState::Down { detail: error.to_string() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files written before the record was shared keep `id` and `createdAtMillis`; this
    /// build reads them (and writes `_id` and `createdAt`, which an older build cannot read).
    #[test]
    fn a_record_written_before_the_shared_record_is_read() {
        let id = NotificationId::new();
        let legacy = serde_json::json!({
            "id": id.to_string(), "eventId": "e-1", "userId": "u-1", "type": "task.completed",
            "message": "done", "taskId": "65f0c0ffee65f0c0ffee65f0", "createdAtMillis": 1_700_000_000_123_i64,
            "read": true,
        });
        let bytes = serde_json::to_vec(&legacy).unwrap();
        let notification = decode::<StoredNotification>(&bytes).unwrap().into_notification().unwrap();
        assert_eq!(notification.id, id);
        assert_eq!(notification.created_at, Timestamp::from_millis(1_700_000_000_123));
        assert_eq!(notification.kind.as_str(), "task.completed");
        assert!(notification.read);
    }
}
