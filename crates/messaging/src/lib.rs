//! Agora messaging (being written).
