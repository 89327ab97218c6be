//! The messaging test suite, one binary. Store tests run on SQLite and on PostgreSQL
//! (skipped loudly when PostgreSQL is unreachable, unless `AGORA_REQUIRE_SERVERS=1`).

mod support;

mod crash;
mod db;
mod envelope;
mod feed;
mod outbox;
mod process;
mod subscriber;
