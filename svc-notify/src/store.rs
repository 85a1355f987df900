//! Where notifications live, behind a small trait so the consumer and the handlers do
//! not care whether it is MongoDB or the embedded redb file of the standalone mode (and
//! unit tests can use a fake).

#[cfg(feature = "embedded")]
mod embedded;
mod mongo;

use async_trait::async_trait;
use todo_common::health::BackendState;
pub use todo_common::store::StoreError;

use crate::domain::{ListQuery, NewNotification, Notification, NotificationId, Page, UserId};

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
