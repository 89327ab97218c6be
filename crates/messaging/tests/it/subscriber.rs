//! subscriber tests (next)
