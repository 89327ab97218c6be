//! Agora event contracts (being written).
