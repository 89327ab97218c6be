//! One integration-test binary for agora-resilience. Every test but the real-server
//! ones runs on paused tokio time, so timeouts, backoffs and open periods are exact.

mod balance;
mod breaker;
mod bulkhead;
mod client;
mod deadline;
mod fallback;
mod retry;
mod stack;
mod support;
mod timeout;
