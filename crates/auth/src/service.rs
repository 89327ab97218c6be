//! Token checking as a service wires it: a [`Verifier`] on identity's JWKS, and the
//! `PasswordChanged` subscriber that keeps its revocations current.

use agora_bus::SharedBus;
use agora_contracts::{PasswordChanged, bus_subject};
use agora_messaging::{Db, Subscriber, SubscriberConfig, SubscriberHandle};

use crate::{Error, KeySource, PasswordChangedHandler, Revocations, Verifier, VerifierConfig};

/// What a service that checks tokens runs: its [`Verifier`] (put it in the router
/// state) and the consumer of `PasswordChanged` that revokes older tokens.
#[derive(Debug)]
pub struct ServiceAuth {
    verifier: Verifier,
    revocations: SubscriberHandle,
}

impl ServiceAuth {
    /// Loads the revocations kept in `db` (applying this crate's migrations), fetches
    /// the keys from `keys` (a service still starts when identity is unreachable), and
    /// starts the durable consumer `<service>-revocations` on identity's stream.
    ///
    /// `db` must have the messaging tables ([`Db::migrate_messaging`]).
    pub async fn start(
        service: &str,
        db: &Db,
        bus: &SharedBus,
        keys: impl KeySource,
    ) -> Result<Self, Error> {
        let revocations = Revocations::load(db).await?;
        let verifier = Verifier::start(keys, revocations.clone(), VerifierConfig::default()).await;
        let config = SubscriberConfig::on_source(format!("{service}-revocations"), "identity")
            .filter(bus_subject::<PasswordChanged>());
        let revocations =
            Subscriber::spawn(db, bus, config, PasswordChangedHandler::new(revocations))
                .await
                .map_err(|e| Error::Store(e.to_string()))?;
        Ok(Self {
            verifier,
            revocations,
        })
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Stops the revocation consumer (what it has not acknowledged is redelivered).
    pub async fn shutdown(self) {
        self.revocations.shutdown().await;
    }
}
