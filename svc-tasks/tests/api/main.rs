//! Black-box tests of svc-tasks against real MongoDB, Redis and RabbitMQ.

mod cache;
mod crud;
mod events;
mod helpers;
mod list;
mod outages;
