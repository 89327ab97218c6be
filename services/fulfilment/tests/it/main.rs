//! Fulfilment's test suite, one binary. Every case runs on SQLite and on PostgreSQL
//! (skipped loudly when PostgreSQL is unreachable, unless `AGORA_REQUIRE_SERVERS=1`).

pub use agora_service_testkit::on_both_backends;

mod support;

mod api;
mod compensation;
mod failures;
mod happy;
mod robustness;
