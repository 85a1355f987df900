//! The one error shape of every service's storage seam, whatever the backend: the
//! handlers and consumers above a store decide on it without knowing MongoDB or redb.

use crate::Problem;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The write breaks a uniqueness rule (an e-mail address already registered, say);
    /// the text says which, for the client.
    #[error("{0}")]
    Conflict(&'static str),
    /// Worth retrying: the database could not be reached or did not answer in time.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl StoreError {
    /// For a backend's own error types (redb's, a decoding error) at the seam.
    pub fn unexpected(error: impl Into<anyhow::Error>) -> Self {
        Self::Unexpected(error.into())
    }
}

impl From<StoreError> for Problem {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict(detail) => Problem::conflict(detail),
            StoreError::Unavailable(detail) => {
                tracing::warn!(%detail, "database unavailable");
                Problem::service_unavailable("the database is unavailable, try again shortly")
            }
            StoreError::Unexpected(error) => Problem::internal(&error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_answers_its_status() {
        assert_eq!(Problem::from(StoreError::Conflict("taken")).status, 409);
        assert_eq!(Problem::from(StoreError::Unavailable("down".into())).status, 503);
        assert_eq!(Problem::from(StoreError::unexpected(anyhow::anyhow!("bad"))).status, 500);
    }
}
