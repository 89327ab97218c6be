//! The Agora shop as a library: [`shop::Shop`] composes every service in one process
//! (what `agora up` runs and what the end-to-end tests start), each service on its own
//! HTTP listener, talking to the others only over HTTP and the bus.
//!
//! This crate composes the other crates; it holds no business rules of its own.

#![forbid(unsafe_code)]

pub mod audit;
pub mod child;
pub mod control;
pub mod feed;
pub mod host;
pub mod logging;
pub mod provider;
pub mod runtime;
pub mod secrets;
pub mod shop;
pub mod topology;
pub mod traces;
