//! The embedded database behind every service's standalone-mode store: one redb file
//! per service, its tables created at open, and all work run on the blocking pool so
//! the async runtime never waits on disk.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, WriteTransaction};
use serde::{Deserialize, Serialize};

/// Work on the embedded database did not finish (its blocking task panicked or was
/// cancelled).
#[derive(Debug, thiserror::Error)]
#[error("embedded database work did not finish: {0}")]
pub struct EmbeddedError(String);

impl From<EmbeddedError> for crate::store::StoreError {
    fn from(error: EmbeddedError) -> Self {
        Self::unexpected(error)
    }
}

/// A redb (or record decoding) error at a store's seam, named as the embedded store's.
pub fn store_error(error: impl std::fmt::Display) -> crate::store::StoreError {
    crate::store::StoreError::unexpected(anyhow::anyhow!("embedded store: {error}"))
}

/// A record as the tables keep it: JSON.
pub fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, crate::store::StoreError> {
    serde_json::to_vec(record).map_err(store_error)
}

/// A record read back; a record that does not decode is the store's fault, not the caller's.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, crate::store::StoreError> {
    serde_json::from_slice(bytes).map_err(store_error)
}

#[derive(Clone)]
pub struct EmbeddedDb(Arc<Database>);

impl EmbeddedDb {
    /// Opens (or creates) the file, then lets `create_tables` open every table once so
    /// later read transactions find them.
    pub fn open(
        path: &Path,
        create_tables: impl FnOnce(&WriteTransaction) -> anyhow::Result<()>,
    ) -> anyhow::Result<Self> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        create_tables(&txn)?;
        txn.commit()?;
        Ok(Self(Arc::new(db)))
    }

    /// Runs `work` against the database on the blocking pool.
    pub async fn blocking<T, E>(&self, work: impl FnOnce(&Database) -> Result<T, E> + Send + 'static) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<EmbeddedError> + Send + 'static,
    {
        let db = Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || work(&db)).await.map_err(|e| E::from(EmbeddedError(e.to_string())))?
    }
}
