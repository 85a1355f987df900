//! Hostile input against the running system (the real edge in front of the real
//! services, as processes, on the real backends): a JWT attack corpus, access control
//! between users, hostile bodies, headers and query strings, slow clients, and the
//! checks of outside tools (promtool, schemathesis, headless Chromium).

mod access;
mod bodies;
mod slow;
mod support;
mod tokens;
mod tools;
