//! Ordering's test suite, one binary, through the public surfaces: HTTP via
//! `Router::oneshot`, events via an embedded bus or the replica handlers directly.
//! Tests that touch the store run on SQLite and on PostgreSQL (skipped loudly when
//! PostgreSQL is unreachable).

pub use agora_service_testkit::on_both_backends;

mod support;

mod checkout;
mod clients;
mod idempotency;
mod orders;
mod prices;
mod replica;
mod resilient;
mod status;
