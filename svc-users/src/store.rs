//! Where users live: a small trait, its MongoDB implementation and an embedded one
//! ([`EmbeddedUserStore`], on redb) for the standalone mode.

#[cfg(feature = "embedded")]
mod embedded;

#[cfg(feature = "embedded")]
pub use embedded::EmbeddedUserStore;

use async_trait::async_trait;
use mongodb::bson::{doc, oid::ObjectId, DateTime as BsonDateTime};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};
use todo_common::health::BackendState;
pub use todo_common::store::StoreError;
use todo_common::time::Timestamp;
use tokio::sync::OnceCell;

use crate::domain::{DisplayName, Email, User, UserId};

/// A user as MongoDB keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct UserDocument {
    #[serde(rename = "_id")]
    id: ObjectId,
    email: String,
    name: Option<String>,
    #[serde(rename = "passwordHash")]
    password_hash: String,
    #[serde(rename = "createdAt")]
    created_at: BsonDateTime,
}

impl From<&User> for UserDocument {
    fn from(user: &User) -> Self {
        Self {
            id: user.id.object_id(),
            email: user.email.as_ref().to_owned(),
            name: user.name.as_ref().map(|n| n.as_ref().to_owned()),
            password_hash: user.password_hash.clone(),
            created_at: BsonDateTime::from(user.created_at),
        }
    }
}

impl TryFrom<UserDocument> for User {
    type Error = StoreError;

    fn try_from(doc: UserDocument) -> Result<Self, StoreError> {
        let created_at = Timestamp::from(doc.created_at);
        stored_user(UserId::from(doc.id), &doc.email, doc.name.as_deref(), doc.password_hash, created_at)
    }
}

/// A user read back from a store, its fields checked again as at registration.
fn stored_user(
    id: UserId,
    email: &str,
    name: Option<&str>,
    password_hash: String,
    created_at: Timestamp,
) -> Result<User, StoreError> {
    Ok(User {
        id,
        email: Email::parse(email).map_err(|_| corrupt(&id.to_string(), "email"))?,
        name: name.map(DisplayName::parse).transpose().map_err(|_| corrupt(&id.to_string(), "name"))?,
        password_hash,
        created_at,
    })
}

fn corrupt(id: &str, field: &str) -> StoreError {
    StoreError::unexpected(anyhow::anyhow!("stored user {id} has a bad {field}"))
}

/// What an insert of an address already registered answers.
pub const EMAIL_TAKEN: StoreError = StoreError::Conflict("this e-mail address is already registered");

#[async_trait]
pub trait UserStore: Send + Sync {
    /// Stores a new user; [`EMAIL_TAKEN`] if the address is registered already.
    async fn insert(&self, user: &User) -> Result<(), StoreError>;
    async fn find_by_email(&self, email: &Email) -> Result<Option<User>, StoreError>;
    async fn find_by_id(&self, id: UserId) -> Result<Option<User>, StoreError>;
    /// The backend's name in `/readyz`.
    fn backend_name(&self) -> &'static str;
    async fn ping(&self) -> BackendState;
}

pub struct MongoUserStore {
    db: Database,
    users: Collection<UserDocument>,
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
    async fn insert(&self, user: &User) -> Result<(), StoreError> {
        self.ensure_indexes().await?;
        match self.users.insert_one(UserDocument::from(user)).await {
            Ok(_) => Ok(()),
            Err(e) if todo_common::mongo::is_duplicate_key(&e) => Err(EMAIL_TAKEN),
            Err(e) => Err(e.into()),
        }
    }

    async fn find_by_email(&self, email: &Email) -> Result<Option<User>, StoreError> {
        self.users.find_one(doc! { "email": email.as_ref() }).await?.map(User::try_from).transpose()
    }

    async fn find_by_id(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.users.find_one(doc! { "_id": id.object_id() }).await?.map(User::try_from).transpose()
    }

    fn backend_name(&self) -> &'static str {
        "mongodb"
    }

    async fn ping(&self) -> BackendState {
        todo_common::mongo::ping(&self.db).await
    }
}
