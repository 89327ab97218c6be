//! The conformance suite on the embedded (SQLite) backend.
