//! Token checking as a service wires it: a [`Verifier`] on identity's JWKS, and the
//! `PasswordChanged` and `UserSignedOut` subscribers that keep its revocations current.

use agora_bus::SharedBus;
use agora_contracts::{PasswordChanged, UserSignedOut, bus_subject};
use agora_messaging::{Db, Subscriber, SubscriberConfig, SubscriberHandle};

use crate::{Error, KeySource, PasswordChangedHandler, Revocations, Verifier, VerifierConfig};

/// What a service that checks tokens runs: its [`Verifier`] (put it in the router
/// state), the consumer of `PasswordChanged` that revokes older tokens and the consumer
/// of `UserSignedOut` that revokes the token signed out with.
#[derive(Debug)]
pub struct ServiceAuth {
    verifier: Verifier,
    revocations: SubscriberHandle,
    sign_outs: SubscriberHandle,
}

impl ServiceAuth {
    /// Loads the revocations kept in `db` (applying this crate's migrations), fetches
    /// the keys from `keys` (a service still starts when identity is unreachable), and
    /// starts the durable consumers `<service>-revocations` (password changes) and
    /// `<service>-sign-outs` on identity's stream. Two consumers, each filtered to its
    /// one event type, so that the many sign-ins on the stream cost them nothing.
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
        let handler = PasswordChangedHandler::new(revocations);
        let changes = Subscriber::spawn(db, bus, config, handler.clone())
            .await
            .map_err(|e| Error::Store(e.to_string()))?;
        let config = SubscriberConfig::on_source(format!("{service}-sign-outs"), "identity")
            .filter(bus_subject::<UserSignedOut>());
        let sign_outs = Subscriber::spawn(db, bus, config, handler)
            .await
            .map_err(|e| Error::Store(e.to_string()))?;
        Ok(Self {
            verifier,
            revocations: changes,
            sign_outs,
        })
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Stops the revocation consumers (what they have not acknowledged is redelivered).
    pub async fn shutdown(self) {
        tokio::join!(self.revocations.shutdown(), self.sign_outs.shutdown());
    }
}
