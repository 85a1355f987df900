//! MongoDB connection settings shared by the services: short timeouts so an outage
//! turns into a quick 503 instead of a hang, a bounded pool, and error mapping.

use std::time::Duration;

pub use mongodb::bson::oid::ObjectId;
use mongodb::error::{Error, ErrorKind};
use mongodb::options::{ClientOptions, WriteConcern};
use mongodb::{Client, Database};

use crate::config::{EnvReader, Secret, Var};
use crate::health::BackendState;
use crate::store::StoreError;
use crate::time::Timestamp;

pub const MONGODB_URI: Var = Var::new("MONGODB_URI", "mongodb://127.0.0.1:27017", "MongoDB connection string");

/// Also the driver's heartbeat timeout: a busy server answering a heartbeat later than
/// this is declared down and every connection in use is cut, so not too short.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(2);
const PING_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_POOL_SIZE: u32 = 64;

/// Where a service keeps its data: the server (`MONGODB_URI`) and its own database.
#[derive(Debug, Clone)]
pub struct MongoSettings {
    pub uri: Secret,
    pub database: String,
}

impl MongoSettings {
    /// Reads `MONGODB_URI` and the service's database variable.
    pub fn read(reader: &mut EnvReader<'_>, database: &Var) -> Self {
        Self { uri: Secret::new(reader.string(&MONGODB_URI)), database: reader.string(database) }
    }

    /// A handle on the database; no I/O happens until first use, so a service starts
    /// (unready) even while MongoDB is still coming up.
    pub async fn connect(&self, app_name: &str) -> anyhow::Result<Database> {
        let mut options = ClientOptions::parse(self.uri.expose()).await?;
        options.app_name = Some(app_name.to_owned());
        options.connect_timeout = Some(CONNECT_TIMEOUT);
        options.server_selection_timeout = Some(SERVER_SELECTION_TIMEOUT);
        options.max_pool_size = Some(MAX_POOL_SIZE);
        // Acknowledged only once a majority of the replica set has it: a write the client
        // was told succeeded survives the primary's loss. Explicit, because an operator may
        // change the replica set's default write concern.
        options.write_concern = Some(WriteConcern::majority());
        Ok(Client::with_options(options)?.database(&self.database))
    }
}

pub async fn ping(db: &Database) -> BackendState {
    let ping = db.run_command(mongodb::bson::doc! { "ping": 1 });
    match tokio::time::timeout(PING_TIMEOUT, ping).await {
        Ok(Ok(_)) => BackendState::Up,
        Ok(Err(e)) => BackendState::Down { detail: e.to_string() },
        Err(_) => BackendState::Down { detail: "ping timed out".into() },
    }
}

/// True when a write failed on a unique index.
pub fn is_duplicate_key(error: &Error) -> bool {
    match error.kind.as_ref() {
        ErrorKind::Write(mongodb::error::WriteFailure::WriteError(e)) => e.code == 11000,
        ErrorKind::Command(e) => e.code == 11000,
        ErrorKind::InsertMany(e) => e.write_errors.iter().flatten().any(|e| e.code == 11000),
        _ => false,
    }
}

/// True when the database could not be reached, as opposed to refusing the request.
pub fn is_unavailable(error: &Error) -> bool {
    matches!(
        error.kind.as_ref(),
        ErrorKind::ServerSelection { .. } | ErrorKind::Io(_) | ErrorKind::ConnectionPoolCleared { .. }
    ) || error.contains_label("RetryableWriteError")
        || error.contains_label("TransientTransactionError")
}

/// Unreachable or unanswered is worth a retry (503); anything else is unexpected.
impl From<Error> for StoreError {
    fn from(error: Error) -> Self {
        if is_unavailable(&error) {
            StoreError::Unavailable(error.to_string())
        } else {
            StoreError::Unexpected(error.into())
        }
    }
}

/// BSON dates hold milliseconds, as [`Timestamp`] does: the conversions lose nothing.
impl From<Timestamp> for mongodb::bson::DateTime {
    fn from(at: Timestamp) -> Self {
        Self::from_millis(at.millis())
    }
}

impl From<mongodb::bson::DateTime> for Timestamp {
    fn from(at: mongodb::bson::DateTime) -> Self {
        Timestamp::from_millis(at.timestamp_millis())
    }
}

/// Declares an id type holding an [`ObjectId`], shown and parsed as its 24 hex digits:
/// `new` makes a fresh one, `parse` answers `None` for anything else (an id that names
/// nothing), `object_id` is for queries.
#[macro_export]
macro_rules! object_id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name($crate::mongo::ObjectId);

        impl $name {
            pub fn new() -> Self {
                Self($crate::mongo::ObjectId::new())
            }

            pub fn parse(raw: &str) -> Option<Self> {
                $crate::mongo::ObjectId::parse_str(raw).ok().map(Self)
            }

            pub fn object_id(&self) -> $crate::mongo::ObjectId {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl From<$crate::mongo::ObjectId> for $name {
            fn from(id: $crate::mongo::ObjectId) -> Self {
                Self(id)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0.to_hex())
            }
        }

        impl std::str::FromStr for $name {
            type Err = ();

            fn from_str(raw: &str) -> Result<Self, ()> {
                Self::parse(raw).ok_or(())
            }
        }
    };
}
