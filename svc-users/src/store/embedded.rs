//! Users in an embedded redb file (`users.redb`), for the standalone mode.
//!
//! Two tables: `users` (id hex → JSON record) and `users_by_email` (e-mail → id hex).
//! An insert checks and claims the e-mail in the same write transaction as the user, so
//! the address stays unique. Commits are durable (redb's default), and every call runs
//! on the blocking pool so the runtime never waits on the disk.

use std::path::Path;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mongodb::bson::oid::ObjectId;
use redb::{ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use todo_common::embedded::{EmbeddedDb, EmbeddedError};
use todo_common::health::BackendState;

use super::{NewUser, StoreError, UserRecord, UserStore};
use crate::domain::Email;

const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
const USERS_BY_EMAIL: TableDefinition<&str, &str> = TableDefinition::new("users_by_email");

/// A user as stored: the record with its time in milliseconds.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredUser {
    id: String,
    email: String,
    name: Option<String>,
    password_hash: String,
    created_at_millis: i64,
}

impl StoredUser {
    fn from_record(user: &UserRecord) -> Self {
        Self {
            id: user.id.to_hex(),
            email: user.email.clone(),
            name: user.name.clone(),
            password_hash: user.password_hash.clone(),
            created_at_millis: user.created_at.timestamp_millis(),
        }
    }

    fn into_record(self) -> Result<UserRecord, StoreError> {
        Ok(UserRecord {
            id: ObjectId::parse_str(&self.id).map_err(|e| embedded(format!("stored user id: {e}")))?,
            email: self.email,
            name: self.name,
            password_hash: self.password_hash,
            created_at: DateTime::<Utc>::from_timestamp_millis(self.created_at_millis).unwrap_or_default(),
        })
    }
}

impl From<EmbeddedError> for StoreError {
    fn from(error: EmbeddedError) -> Self {
        embedded(error)
    }
}

fn embedded(error: impl std::fmt::Display) -> StoreError {
    StoreError::Embedded(error.to_string())
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

fn read_user(txn: &ReadTransaction, id: &str) -> Result<Option<UserRecord>, StoreError> {
    let users = txn.open_table(USERS).map_err(embedded)?;
    let Some(bytes) = users.get(id).map_err(embedded)? else {
        return Ok(None);
    };
    let stored: StoredUser = serde_json::from_slice(bytes.value()).map_err(embedded)?;
    stored.into_record().map(Some)
}

#[async_trait]
impl UserStore for EmbeddedUserStore {
    async fn insert(&self, user: NewUser) -> Result<UserRecord, StoreError> {
        let record = UserRecord {
            id: ObjectId::new(),
            email: user.email.as_ref().to_owned(),
            name: user.name.map(|n| n.as_ref().to_owned()),
            password_hash: user.password_hash,
            created_at: todo_common::time::now(),
        };
        self.db
            .blocking(move |db| {
                let stored = serde_json::to_vec(&StoredUser::from_record(&record)).map_err(embedded)?;
                let id = record.id.to_hex();
                let txn = db.begin_write().map_err(embedded)?;
                {
                    let mut by_email = txn.open_table(USERS_BY_EMAIL).map_err(embedded)?;
                    if by_email.get(record.email.as_str()).map_err(embedded)?.is_some() {
                        return Err(StoreError::EmailTaken);
                    }
                    by_email.insert(record.email.as_str(), id.as_str()).map_err(embedded)?;
                    let mut users = txn.open_table(USERS).map_err(embedded)?;
                    users.insert(id.as_str(), stored.as_slice()).map_err(embedded)?;
                }
                txn.commit().map_err(embedded)?;
                Ok(record)
            })
            .await
    }

    async fn find_by_email(&self, email: &Email) -> Result<Option<UserRecord>, StoreError> {
        let email = email.as_ref().to_owned();
        self.db
            .blocking(move |db| {
                // One read transaction: the index entry and the user it names are consistent.
                let txn = db.begin_read().map_err(embedded)?;
                let by_email = txn.open_table(USERS_BY_EMAIL).map_err(embedded)?;
                let id = by_email.get(email.as_str()).map_err(embedded)?.map(|id| id.value().to_owned());
                match id {
                    Some(id) => read_user(&txn, &id),
                    None => Ok(None),
                }
            })
            .await
    }

    async fn find_by_id(&self, id: ObjectId) -> Result<Option<UserRecord>, StoreError> {
        self.db.blocking(move |db| read_user(&db.begin_read().map_err(embedded)?, &id.to_hex())).await
    }

    fn backend_name(&self) -> &'static str {
        "redb"
    }

    async fn ping(&self) -> BackendState {
        match self.db.blocking(|db| db.begin_read().map(drop).map_err(embedded)).await {
            Ok(()) => BackendState::Up,
            Err(error) => BackendState::Down { detail: error.to_string() },
        }
    }
}
