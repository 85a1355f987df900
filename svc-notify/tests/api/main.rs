//! Black-box tests of svc-notify against real MongoDB and RabbitMQ: events are
//! published to the test's own exchange the way svc-tasks publishes them, and the
//! results are observed over HTTP and on the dead-letter queue.

mod auth;
mod consume;
mod health;
mod helpers;
mod list;
mod quorum;
mod read;
