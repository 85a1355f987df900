//! Users in an embedded redb file (`users.redb`), for the standalone mode.
//!
//! Two tables: `users` (id hex → JSON record) and `users_by_email` (e-mail → id hex).
//! An insert checks and claims the e-mail in the same write transaction as the user, so
//! the address stays unique. Commits are durable (redb's default), and every call runs
//! on the blocking pool so the runtime never waits on the disk.

use std::path::Path;

use async_trait::async_trait;
use redb::{ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use todo_common::embedded::{decode, encode, store_error, EmbeddedDb};
use todo_common::health::BackendState;
use todo_common::time::Timestamp;

use super::{stored_user, StoreError, UserStore, EMAIL_TAKEN};
use crate::domain::{Email, User, UserId};

const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
const USERS_BY_EMAIL: TableDefinition<&str, &str> = TableDefinition::new("users_by_email");

/// A user as stored: its fields, the time in milliseconds.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredUser {
    id: String,
    email: String,
    name: Option<String>,
    password_hash: String,
    created_at_millis: i64,
}

impl From<&User> for StoredUser {
    fn from(user: &User) -> Self {
        Self {
            id: user.id.to_string(),
            email: user.email.as_ref().to_owned(),
            name: user.name.as_ref().map(|n| n.as_ref().to_owned()),
            password_hash: user.password_hash.clone(),
            created_at_millis: user.created_at.millis(),
        }
    }
}

impl TryFrom<StoredUser> for User {
    type Error = StoreError;

    fn try_from(stored: StoredUser) -> Result<Self, StoreError> {
        let id = UserId::parse(&stored.id).ok_or_else(|| store_error(format!("stored user id {:?}", stored.id)))?;
        let created_at = Timestamp::from_millis(stored.created_at_millis);
        stored_user(id, &stored.email, stored.name.as_deref(), stored.password_hash, created_at)
    }
}

pub struct EmbeddedUserStore {
    db: EmbeddedDb,
}

impl EmbeddedUserStore {
    /// Opens (or creates) the database file and its tables.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let db = EmbeddedDb::open(path, |txn| {
            txn.open_table(USERS)?;
            txn.open_table(USERS_BY_EMAIL)?;
            Ok(())
        })?;
        Ok(Self { db })
    }
}

fn read_user(txn: &ReadTransaction, id: &str) -> Result<Option<User>, StoreError> {
    let users = txn.open_table(USERS).map_err(store_error)?;
    let Some(bytes) = users.get(id).map_err(store_error)? else {
        return Ok(None);
    };
    let stored: StoredUser = decode(bytes.value())?;
    User::try_from(stored).map(Some)
}

#[async_trait]
impl UserStore for EmbeddedUserStore {
    async fn insert(&self, user: &User) -> Result<(), StoreError> {
        let stored = StoredUser::from(user);
        self.db
            .blocking(move |db| {
                let bytes = encode(&stored)?;
                let txn = db.begin_write().map_err(store_error)?;
                {
                    let mut by_email = txn.open_table(USERS_BY_EMAIL).map_err(store_error)?;
                    if by_email.get(stored.email.as_str()).map_err(store_error)?.is_some() {
                        return Err(EMAIL_TAKEN);
                    }
                    by_email.insert(stored.email.as_str(), stored.id.as_str()).map_err(store_error)?;
                    let mut users = txn.open_table(USERS).map_err(store_error)?;
                    users.insert(stored.id.as_str(), bytes.as_slice()).map_err(store_error)?;
                }
                txn.commit().map_err(store_error)
            })
            .await
    }

    async fn find_by_email(&self, email: &Email) -> Result<Option<User>, StoreError> {
        let email = email.as_ref().to_owned();
        self.db
            .blocking(move |db| {
                // One read transaction: the index entry and the user it names are consistent.
                let txn = db.begin_read().map_err(store_error)?;
                let by_email = txn.open_table(USERS_BY_EMAIL).map_err(store_error)?;
                let id = by_email.get(email.as_str()).map_err(store_error)?.map(|id| id.value().to_owned());
                match id {
                    Some(id) => read_user(&txn, &id),
                    None => Ok(None),
                }
            })
            .await
    }

    async fn find_by_id(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.db.blocking(move |db| read_user(&db.begin_read().map_err(store_error)?, &id.to_string())).await
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
