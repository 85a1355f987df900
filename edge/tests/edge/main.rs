//! Black-box tests of the real `edge` binary against stub upstreams.

mod helpers;

mod auth;
mod cli;
mod client_conn;
mod client_ip;
mod cors_and_headers;
mod limits;
mod logs;
mod reload;
mod routing;
mod shared_limits;
mod tls;
mod trace_context;
mod upstreams;
