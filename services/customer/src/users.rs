//! The consumer of identity's `UserSignedUp`: every user who signs up gets a profile
//! (name and email), announced with `CustomerRegistered`.

use agora_contracts::{CustomerRegistered, UserSignedUp};
use agora_messaging::{Envelope, Handler, HandlerError, Outbox};
use async_trait::async_trait;
use sqlx::{Any, Transaction};

use crate::store::{self, Registration};

/// The durable consumer's name, on identity's stream.
pub const CONSUMER: &str = "customer-users";

/// Creates (or completes) the profile of a user who signed up. The inbox makes a
/// redelivery a no-op; a second sign-up event for a registered profile changes
/// nothing either.
#[derive(Debug)]
pub struct SignUps;

#[async_trait]
impl Handler for SignUps {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        if !envelope.is::<UserSignedUp>() {
            // Not ours to handle (the consumer filters on the subject anyway).
            return Ok(());
        }
        let user: UserSignedUp = envelope.decode()?;
        let name = user.name.trim();
        let email = user.email.trim();
        let registration = Registration {
            id: user.user_id,
            name,
            email,
            signed_up_at: user.signed_up_at,
            now: store::now(),
        };
        let Some(version) = store::register(tx, &registration)
            .await
            .map_err(HandlerError::transient)?
        else {
            tracing::debug!(customer_id = %user.user_id, "profile registered already");
            return Ok(());
        };
        let event = CustomerRegistered {
            customer_id: user.user_id,
            name: name.to_owned(),
            email: email.to_owned(),
            registered_at: user.signed_up_at,
            version,
        };
        Outbox::append(tx, &Envelope::new(&event, &envelope.context_for_effects())?).await?;
        tracing::info!(customer_id = %user.user_id, version, "customer registered");
        Ok(())
    }
}
