//! Payment's test suite, one binary, through the public surfaces: HTTP via
//! `Router::oneshot`, events via an embedded bus, the provider through its trait.
//! Tests that touch the store run on SQLite and on PostgreSQL (skipped loudly when
//! PostgreSQL is unreachable).

pub use agora_service_testkit::on_both_backends;

mod support;

mod api;
mod fulfilment;
mod idempotency;
mod orphans;
mod provider;
