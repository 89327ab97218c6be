//! crash tests (next)
