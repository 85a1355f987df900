//! `svc-users --seed`: the demo users, created idempotently.

use todo_common::time::Timestamp;

use crate::config::Config;
use crate::domain::{DisplayName, Email, Password, User};
use crate::password::PasswordHasher;
use crate::store::{MongoUserStore, StoreError, UserStore};

/// Demo accounts: (e-mail, password, name). Public by design: only for demos.
pub const DEMO_USERS: &[(&str, &str, &str)] =
    &[("alice@example.com", "alice-demo-password", "Alice"), ("bob@example.com", "bob-demo-password", "Bob")];

/// Creates the demo users that do not exist yet; returns how many were created.
pub async fn seed(config: &Config) -> anyhow::Result<usize> {
    let db = config.mongodb.connect("svc-users-seed").await?;
    seed_store(&MongoUserStore::new(&db), config.bcrypt_cost).await
}

/// Creates the demo users missing from `store`, hashing with `bcrypt_cost`.
pub async fn seed_store(store: &dyn UserStore, bcrypt_cost: u32) -> anyhow::Result<usize> {
    let hasher = PasswordHasher::new(bcrypt_cost).await?;
    let mut created = 0;
    for (email, password, name) in DEMO_USERS {
        let email = Email::parse(email).map_err(|e| anyhow::anyhow!(e.message))?;
        let password = Password::parse((*password).to_owned()).map_err(|e| anyhow::anyhow!(e.message))?;
        let name = Some(DisplayName::parse(name).map_err(|e| anyhow::anyhow!(e.message))?);
        let password_hash = hasher.hash(&password).await?;
        match store.insert(&User::register(email, name, password_hash, Timestamp::now())).await {
            Ok(()) => created += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(created)
}
