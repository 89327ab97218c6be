//! The bus test suite: one conformance suite, instantiated for every backend.

mod conformance;
mod embedded;
mod nats;
mod switch;
