//! Setting a price: the row and its `PriceChanged` event in one transaction. The admin
//! API and the demo data both go through [`set`].

use agora_contracts::PriceChanged;
use agora_messaging::{Context, Db, Envelope, Outbox};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::Price;
use crate::{Error, store};

/// What [`set`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Set {
    /// The price changed to this version; `PriceChanged` is in the outbox.
    Changed(u64),
    /// It already was this price, at this version (0: no such product's price).
    Unchanged(u64),
}

/// Sets `product_id`'s price, publishing `PriceChanged` when it changes.
/// [`Error::Conflict`] when a concurrent change won.
pub async fn set(db: &Db, outbox: &Outbox, product_id: Uuid, price: &Price) -> Result<Set, Error> {
    let now = OffsetDateTime::now_utc();
    let mut tx = db.begin().await?;
    let changed = store::set_price(
        &mut tx,
        product_id,
        price.amount_cents,
        price.currency.as_str(),
        store::ms_of(now),
    )
    .await?;
    let Some(version) = changed else {
        tx.rollback().await?;
        let version = store::prices(db)
            .await?
            .into_iter()
            .find(|p| p.product_id == product_id)
            .map_or(0, |p| p.version);
        return Ok(Set::Unchanged(version));
    };
    let event = PriceChanged {
        product_id,
        price: agora_contracts::Money {
            amount_cents: price.amount_cents,
            currency: price.currency.as_str().to_owned(),
        },
        changed_at: now,
        version,
    };
    Outbox::append(
        &mut tx,
        &Envelope::new(&event, &Context::new(product_id.to_string()))?,
    )
    .await?;
    outbox.commit(tx).await?;
    tracing::info!(%product_id, version, "price changed");
    Ok(Set::Changed(version))
}
