//! The MongoDB notification store: one collection, a unique index on `eventId` that
//! makes storing an event idempotent, and `{userId, createdAt, _id}` for the newest-first
//! cursor pagination.

use std::future::IntoFuture;
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{self, doc, oid::ObjectId, Document};
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::{Collection, Database, IndexModel};
use todo_common::health::BackendState;
use todo_common::time::Timestamp;

use super::{Inserted, NotificationRecord, NotificationStore, StoreError};
use crate::domain::{Cursor, ListQuery, NewNotification, Notification, NotificationId, Page, ReadFilter, UserId};

const COLLECTION: &str = "notifications";
/// No single database call may hold a request or the consumer longer than this.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

type NotificationDocument = NotificationRecord<ObjectId, bson::DateTime>;

impl NotificationDocument {
    fn from_new(notification: &NewNotification) -> Self {
        Self::unread(notification, notification.id.object_id(), bson::DateTime::from(notification.created_at))
    }

    fn into_notification(self) -> Result<Notification, StoreError> {
        self.into_domain(|id| Some(NotificationId::from(*id)), Timestamp::from)
    }
}

pub struct MongoNotificationStore {
    db: Database,
    notifications: Collection<NotificationDocument>,
}

impl MongoNotificationStore {
    pub fn new(db: Database) -> Self {
        let notifications = db.collection(COLLECTION);
        Self { db, notifications }
    }
}

async fn bounded<T>(operation: impl IntoFuture<Output = mongodb::error::Result<T>>) -> Result<T, StoreError> {
    match tokio::time::timeout(OPERATION_TIMEOUT, operation).await {
        Ok(result) => result.map_err(StoreError::from),
        Err(_) => Err(StoreError::Unavailable(format!("no answer within {OPERATION_TIMEOUT:?}"))),
    }
}

fn list_filter(user: &UserId, query: &ListQuery) -> Document {
    let mut filter = doc! { "userId": user.as_str() };
    match query.filter {
        ReadFilter::All => {}
        ReadFilter::UnreadOnly => {
            filter.insert("read", false);
        }
        ReadFilter::ReadOnly => {
            filter.insert("read", true);
        }
    }
    if let Some(Cursor { at, id }) = query.after {
        let created_at = bson::DateTime::from(at);
        filter.insert(
            "$or",
            vec![
                doc! { "createdAt": { "$lt": created_at } },
                doc! { "createdAt": created_at, "_id": { "$lt": id.object_id() } },
            ],
        );
    }
    filter
}

#[async_trait]
impl NotificationStore for MongoNotificationStore {
    async fn ensure_indexes(&self) -> Result<(), StoreError> {
        let indexes = vec![
            IndexModel::builder()
                .keys(doc! { "eventId": 1 })
                .options(IndexOptions::builder().unique(true).name("eventId_unique".to_owned()).build())
                .build(),
            IndexModel::builder()
                .keys(doc! { "userId": 1, "createdAt": -1, "_id": -1 })
                .options(IndexOptions::builder().name("userId_createdAt_id".to_owned()).build())
                .build(),
        ];
        bounded(self.notifications.create_indexes(indexes)).await.map(drop)
    }

    #[tracing::instrument(
        name = "mongodb insert",
        skip_all,
        fields(otel.kind = "client", db.system.name = "mongodb", db.collection.name = "notifications")
    )]
    async fn insert(&self, notification: &NewNotification) -> Result<Inserted, StoreError> {
        let document = NotificationDocument::from_new(notification);
        match tokio::time::timeout(OPERATION_TIMEOUT, self.notifications.insert_one(&document)).await {
            Ok(Ok(_)) => Ok(Inserted::Created),
            Ok(Err(error)) if todo_common::mongo::is_duplicate_key(&error) => Ok(Inserted::Duplicate),
            Ok(Err(error)) => Err(error.into()),
            Err(_) => Err(StoreError::Unavailable(format!("no answer within {OPERATION_TIMEOUT:?}"))),
        }
    }

    async fn list(&self, user: &UserId, query: &ListQuery) -> Result<Page, StoreError> {
        // One extra item tells whether another page follows.
        let fetch = i64::from(query.limit) + 1;
        let documents: Vec<NotificationDocument> = bounded(async {
            self.notifications
                .find(list_filter(user, query))
                .sort(doc! { "createdAt": -1, "_id": -1 })
                .limit(fetch)
                .await?
                .try_collect()
                .await
        })
        .await?;
        let items =
            documents.into_iter().map(NotificationDocument::into_notification).collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(items, query.limit as usize))
    }

    async fn mark_read(&self, user: &UserId, id: NotificationId) -> Result<Option<Notification>, StoreError> {
        let updated = bounded(
            self.notifications
                .find_one_and_update(
                    doc! { "_id": id.object_id(), "userId": user.as_str() },
                    doc! { "$set": { "read": true } },
                )
                .return_document(ReturnDocument::After),
        )
        .await?;
        updated.map(NotificationDocument::into_notification).transpose()
    }

    fn backend_name(&self) -> &'static str {
        "mongodb"
    }

    async fn health(&self) -> BackendState {
        todo_common::mongo::ping(&self.db).await
    }
}
