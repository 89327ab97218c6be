//! The conformance suite on the NATS JetStream backend, each test with its own
//! `nats-server -js`.
