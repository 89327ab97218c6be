//! `agora bench`: measurements against the design brief's targets.

pub mod bus;
