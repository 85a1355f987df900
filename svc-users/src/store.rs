//! Where users live: a small trait, its MongoDB implementation and an embedded one
//! ([`EmbeddedUserStore`], on redb) for the standalone mode.

mod embedded;

pub use embedded::EmbeddedUserStore;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mongodb::bson::{doc, oid::ObjectId};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};
use todo_common::health::BackendState;
use tokio::sync::OnceCell;

use crate::domain::{DisplayName, Email};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRecord {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub email: String,
    pub name: Option<String>,
    #[serde(rename = "passwordHash")]
    pub password_hash: String,
    #[serde(rename = "createdAt", with = "mongodb::bson::serde_helpers::chrono_datetime_as_bson_datetime")]
    pub created_at: DateTime<Utc>,
}

pub struct NewUser {
    pub email: Email,
    pub name: Option<DisplayName>,
    pub password_hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the e-mail address is already registered")]
    EmailTaken,
    #[error(transparent)]
    Database(#[from] mongodb::error::Error),
    #[error("embedded store: {0}")]
    Embedded(String),
}

#[async_trait]
pub trait UserStore: Send + Sync {
    async fn insert(&self, user: NewUser) -> Result<UserRecord, StoreError>;
    async fn find_by_email(&self, email: &Email) -> Result<Option<UserRecord>, StoreError>;
    async fn find_by_id(&self, id: ObjectId) -> Result<Option<UserRecord>, StoreError>;
    /// The backend's name in `/readyz`.
    fn backend_name(&self) -> &'static str;
    async fn ping(&self) -> BackendState;
}

pub struct MongoUserStore {
    db: Database,
    users: Collection<UserRecord>,
    indexes: OnceCell<()>,
}

impl MongoUserStore {
    pub fn new(db: &Database) -> Self {
        Self { db: db.clone(), users: db.collection("users"), indexes: OnceCell::new() }
    }

    /// The unique e-mail index must exist before the first insert; creating it is
    /// retried on each write until MongoDB is reachable.
    async fn ensure_indexes(&self) -> Result<(), StoreError> {
        self.indexes
            .get_or_try_init(|| async {
                let unique = IndexOptions::builder().unique(true).name("email_unique".to_owned()).build();
                let model = IndexModel::builder().keys(doc! { "email": 1 }).options(unique).build();
                self.users.create_index(model).await.map(|_| ())
            })
            .await?;
        Ok(())
    }
}

#[async_trait]
impl UserStore for MongoUserStore {
    async fn insert(&self, user: NewUser) -> Result<UserRecord, StoreError> {
        self.ensure_indexes().await?;
        let record = UserRecord {
            id: ObjectId::new(),
            email: user.email.as_ref().to_owned(),
            name: user.name.map(|n| n.as_ref().to_owned()),
            password_hash: user.password_hash,
            created_at: todo_common::time::now(),
        };
        match self.users.insert_one(&record).await {
            Ok(_) => Ok(record),
            Err(e) if todo_common::mongo::is_duplicate_key(&e) => Err(StoreError::EmailTaken),
            Err(e) => Err(e.into()),
        }
    }

    async fn find_by_email(&self, email: &Email) -> Result<Option<UserRecord>, StoreError> {
        Ok(self.users.find_one(doc! { "email": email.as_ref() }).await?)
    }

    async fn find_by_id(&self, id: ObjectId) -> Result<Option<UserRecord>, StoreError> {
        Ok(self.users.find_one(doc! { "_id": id }).await?)
    }

    fn backend_name(&self) -> &'static str {
        "mongodb"
    }

    async fn ping(&self) -> BackendState {
        todo_common::mongo::ping(&self.db).await
    }
}
