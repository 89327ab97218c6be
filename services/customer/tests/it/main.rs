//! Customer's test suite, one binary, through the public surfaces: HTTP via
//! `Router::oneshot`, events via an embedded bus. Every test that touches the store
//! runs on SQLite and on PostgreSQL (skipped loudly when PostgreSQL is unreachable).

pub use agora_service_testkit::on_both_backends;

mod support;

mod api;
mod events;
mod internal;
mod openapi;
mod users;
