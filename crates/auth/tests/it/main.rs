//! The security suite of agora-auth: the verifier, the extractor, revocation and the
//! key cache, through the public API.

mod support;

mod extractor;
mod instances;
mod keys;
mod logs;
mod revocation;
mod verifier;
