//! End to end: the whole shop in-process (every service on its own port on
//! 127.0.0.1, the gateway on port 0, a temporary data directory), driven over HTTP
//! through the public API only.

mod checkout;
mod edge;
mod fulfilment;
mod hardening;
mod plane;
mod resilience;
mod security;
mod support;
