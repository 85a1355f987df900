//! A Redis connection for callers that must never wait long: connected lazily (a
//! process starts while Redis is down), every call bounded by one timeout, and failures
//! returned as a value so each caller chooses its fallback (svc-tasks reads MongoDB,
//! svc-users skips the login throttle, the edge counts limits locally).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::{EnvReader, Secret, Var};
use crate::health::BackendState;

/// What callers build commands and scripts with, without depending on `redis` themselves.
pub use redis::{cmd, Script};

/// A service's Redis: the server and the prefix of every key the service writes.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: Secret,
    pub key_prefix: String,
}

impl RedisSettings {
    /// Reads the service's two variables (their defaults and help are the service's).
    pub fn read(reader: &mut EnvReader<'_>, url: &Var, key_prefix: &Var) -> Self {
        Self { url: Secret::new(reader.string(url)), key_prefix: reader.string(key_prefix) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

#[derive(Clone)]
pub struct RedisClient {
    connection: ConnectionManager,
    timeout: Duration,
}

impl RedisClient {
    /// Checks the URL now; connects on first use, and reconnects after a failure.
    ///
    /// `what` names the variable the URL came from, for the error message.
    pub fn new(url: &str, what: &str, timeout: Duration) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("{what} is invalid: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self { connection, timeout })
    }

    pub async fn query<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Result<T, RedisError> {
        let mut connection = self.connection.clone();
        self.bounded(command.query_async::<T>(&mut connection)).await
    }

    pub async fn pipeline<T: redis::FromRedisValue>(&self, pipeline: &redis::Pipeline) -> Result<T, RedisError> {
        let mut connection = self.connection.clone();
        self.bounded(pipeline.query_async::<T>(&mut connection)).await
    }

    /// Runs a Lua script (EVALSHA, loading it on first use).
    pub async fn script<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, RedisError> {
        let mut connection = self.connection.clone();
        self.bounded(invocation.invoke_async::<T>(&mut connection)).await
    }

    pub async fn ping(&self) -> Result<(), RedisError> {
        self.query::<String>(&redis::cmd("PING")).await.map(drop)
    }

    /// For `/readyz`: up when Redis answers a ping, otherwise degraded, saying what the
    /// caller does `meanwhile` (its fallback).
    pub async fn readiness(&self, meanwhile: &str) -> BackendState {
        match self.ping().await {
            Ok(()) => BackendState::Up,
            Err(error) => BackendState::Degraded { detail: format!("{error}; {meanwhile}") },
        }
    }

    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RedisError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(RedisError::Timeout(self.timeout)),
        }
    }
}
