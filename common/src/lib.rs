//! What the to-do services really share, one concern per module:
//! typed configuration from the environment, telemetry, problem+json errors,
//! bearer-token issuing and verification, body decoding, the HTTP server loop with
//! its cross-cutting work (request ids, access log, metrics, health), and MongoDB and
//! Redis connection settings.
#![forbid(unsafe_code)]

pub mod auth;
pub mod backoff;
#[cfg(feature = "server")]
pub mod body;
pub mod broker;
#[cfg(feature = "embedded")]
pub mod bus;
pub mod cli;
pub mod config;
#[cfg(feature = "embedded")]
pub mod embedded;
pub mod events;
pub mod health;
pub mod metrics;
#[cfg(feature = "mongodb")]
pub mod mongo;
pub mod paging;
pub mod probe;
pub mod problem;
pub mod redis;
pub mod request_id;
#[cfg(feature = "server")]
pub mod server;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod traces;

pub use problem::Problem;
