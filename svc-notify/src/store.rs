//! Where notifications live, behind a small trait so the consumer and the handlers do
//! not care whether it is MongoDB or the embedded redb file of the standalone mode (and
//! unit tests can use a fake).

#[cfg(feature = "embedded")]
mod embedded;
mod mongo;

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use todo_common::health::BackendState;
pub use todo_common::store::StoreError;
use todo_common::time::Timestamp;

use crate::domain::{EventType, ListQuery, NewNotification, Notification, NotificationId, Page, TaskId, UserId};

#[cfg(feature = "embedded")]
pub use embedded::EmbeddedNotificationStore;
pub use mongo::MongoNotificationStore;

/// What storing an event's notification did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    Created,
    /// A notification for this event id already exists: a redelivery or a republish.
    Duplicate,
}

#[async_trait]
pub trait NotificationStore: Send + Sync + 'static {
    /// Creates the indexes: the unique event id (exactly-once) and the listing order.
    async fn ensure_indexes(&self) -> Result<(), StoreError>;

    /// Stores a notification unless one for the same event exists.
    async fn insert(&self, notification: &NewNotification) -> Result<Inserted, StoreError>;

    async fn list(&self, user: &UserId, query: &ListQuery) -> Result<Page, StoreError>;

    /// Marks the user's notification read; `None` when the user has no such notification.
    async fn mark_read(&self, user: &UserId, id: NotificationId) -> Result<Option<Notification>, StoreError>;

    /// The backend's name in `/readyz`.
    fn backend_name(&self) -> &'static str;

    async fn health(&self) -> BackendState;
}

/// A notification as a store keeps it, in the backend's own id and time types (MongoDB:
/// an ObjectId and a BSON date; the embedded store: hex text and epoch milliseconds).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NotificationRecord<Id, Time> {
    /// `id` in embedded files written before the record was shared.
    #[serde(rename = "_id", alias = "id")]
    id: Id,
    event_id: String,
    user_id: String,
    #[serde(rename = "type")]
    kind: String,
    message: String,
    task_id: String,
    /// `createdAtMillis` in embedded files written before the record was shared.
    #[serde(alias = "createdAtMillis")]
    created_at: Time,
    read: bool,
}

impl<Id: fmt::Debug, Time> NotificationRecord<Id, Time> {
    /// The record of a notification about to be stored, unread.
    fn unread(notification: &NewNotification, id: Id, created_at: Time) -> Self {
        Self {
            id,
            event_id: notification.event_id.as_str().to_owned(),
            user_id: notification.user_id.as_str().to_owned(),
            kind: notification.kind.as_str().to_owned(),
            message: notification.message.clone(),
            task_id: notification.task_id.as_str().to_owned(),
            created_at,
            read: false,
        }
    }

    fn into_domain(
        self,
        id: impl Fn(&Id) -> Option<NotificationId>,
        time: impl Fn(Time) -> Timestamp,
    ) -> Result<Notification, StoreError> {
        let corrupt =
            |what: &str| StoreError::unexpected(anyhow::anyhow!("notification {:?} has a bad {what}", self.id));
        Ok(Notification {
            id: id(&self.id).ok_or_else(|| corrupt("id"))?,
            kind: EventType::parse(&self.kind).ok_or_else(|| corrupt("type"))?,
            task_id: TaskId::parse(&self.task_id).ok_or_else(|| corrupt("taskId"))?,
            created_at: time(self.created_at),
            message: self.message,
            read: self.read,
        })
    }
}
