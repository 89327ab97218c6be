//! Checkout: pricing, customer data (replica, live, or override), the idempotency
//! arbitration, the payment authorization, and the one transaction that writes an
//! accepted order with its `OrderAccepted`.

use std::time::Duration;

use agora_contracts::{Address, AddressSource, OrderAccepted, OrderLine, PaymentMethod};
use agora_httpkit::FieldError;
use agora_messaging::{Context, Envelope, Outbox};
use agora_resilience::Deadline;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::time::Instant;
use uuid::Uuid;

use crate::clients::{AuthorizationRequest, PaymentError};
use crate::domain::{IdempotencyKey, Lines, OrderStatus, payment_request_id, request_fingerprint};
use crate::http::{ApiError, State, order_view};
use crate::store::{self, Claim, CustomerData};

/// The time limits of checkout.
#[derive(Clone, Debug)]
pub struct Limits {
    pub payment_deadline: Duration,
    pub customer_deadline: Duration,
    pub idempotency_wait: Duration,
    pub idempotency_lease: Duration,
}

/// One priced line.
#[derive(Clone, Debug)]
pub struct PricedLine {
    pub product_id: Uuid,
    pub name: Option<String>,
    pub quantity: u32,
    pub unit_price_cents: i64,
    pub line_total_cents: i64,
}

/// Lines priced with ordering's own prices, and their total.
#[derive(Clone, Debug)]
pub struct Priced {
    pub lines: Vec<PricedLine>,
    pub total_cents: i64,
    pub currency: String,
}

/// Prices `lines`. A product is orderable when it has a price and catalog has not
/// deleted it; its name is the replica's, `None` until the replica knows it.
pub async fn price(state: &State, lines: &Lines) -> Result<Priced, ApiError> {
    let ids: Vec<Uuid> = lines.iter().map(|l| l.product_id).collect();
    let known = store::products(&state.db, &ids).await?;
    let mut errors = Vec::new();
    let mut priced = Vec::with_capacity(lines.len());
    let mut currency: Option<String> = None;
    let mut total: Option<i64> = Some(0);
    for (index, line) in lines.iter().enumerate() {
        let info = known.get(&line.product_id).filter(|info| !info.deleted);
        let Some((info, (unit, line_currency))) =
            info.and_then(|info| info.price.as_ref().map(|price| (info, price)))
        else {
            errors.push(FieldError::new(
                format!("lines[{index}].product_id"),
                "is not a product on sale",
            ));
            continue;
        };
        match &currency {
            None => currency = Some(line_currency.clone()),
            Some(c) if c != line_currency => {
                errors.push(FieldError::new(
                    format!("lines[{index}].product_id"),
                    "is priced in another currency than the other lines",
                ));
                continue;
            }
            Some(_) => {}
        }
        let quantity = line.quantity.get();
        let line_total = unit.checked_mul(i64::from(quantity));
        total = total.zip(line_total).and_then(|(t, l)| t.checked_add(l));
        priced.push(PricedLine {
            product_id: line.product_id,
            name: info.name.clone(),
            quantity,
            unit_price_cents: *unit,
            line_total_cents: line_total.unwrap_or(i64::MAX),
        });
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let Some(total_cents) = total else {
        return Err(ApiError::Invalid(vec![FieldError::new(
            "lines",
            "the total is too large",
        )]));
    };
    Ok(Priced {
        lines: priced,
        total_cents,
        currency: currency.unwrap_or_default(),
    })
}

/// The customer data checkout uses, and where it came from.
#[derive(Clone, Debug, Default)]
pub struct CustomerView {
    pub address: Option<Address>,
    pub address_source: Option<AddressSource>,
    /// When the address was last changed (RFC 3339), as far as ordering knows.
    pub address_as_of: Option<String>,
    pub payment_method: Option<PaymentMethod>,
}

/// The customer's address and payment method, from the replica or live, per the
/// `customer_data` setting. Live: 503 when customer cannot answer within the deadline.
pub async fn customer_view(state: &State, customer_id: Uuid) -> Result<CustomerView, ApiError> {
    match store::customer_data(&state.db).await? {
        CustomerData::Replica => {
            let replica = store::customer_replica(&state.db, customer_id).await?;
            let Some(replica) = replica else {
                return Ok(CustomerView::default());
            };
            Ok(CustomerView {
                address_source: replica.address.as_ref().map(|_| AddressSource::Replica),
                address_as_of: replica.address.as_ref().and(replica.address_as_of),
                address: replica.address,
                payment_method: replica.payment_method,
            })
        }
        CustomerData::Sync => {
            // The deadline travels with the call (resilient clients send it as a budget);
            // the timeout bounds any client, resilient or not.
            let deadline = Deadline::after(state.limits.customer_deadline);
            let fetched = tokio::time::timeout(
                state.limits.customer_deadline,
                deadline.scope(state.customer.fetch(customer_id)),
            )
            .await;
            let record = match fetched {
                Ok(Ok(record)) => record,
                Ok(Err(error)) => {
                    tracing::warn!(%error, "customer service unavailable");
                    return Err(ApiError::Unavailable("customer"));
                }
                Err(_) => {
                    tracing::warn!("customer service did not answer in time");
                    return Err(ApiError::Unavailable("customer"));
                }
            };
            let Some(record) = record else {
                return Ok(CustomerView::default());
            };
            Ok(CustomerView {
                address_source: record
                    .address
                    .as_ref()
                    .map(|_| AddressSource::CustomerService),
                address_as_of: record
                    .address
                    .as_ref()
                    .map(|_| store::rfc3339(record.updated_at)),
                address: record.address,
                payment_method: record.payment_method,
            })
        }
    }
}

/// A checkout request, parsed.
#[derive(Clone, Debug)]
pub struct CheckoutRequest {
    pub lines: Lines,
    pub shipping_address: Option<Address>,
}

/// An answer to a checkout: status and JSON body, exactly as first given (repeated
/// verbatim for the same idempotency key and body).
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: String,
    /// The stored answer of an earlier request with the same key (nothing done now).
    pub replayed: bool,
}

/// `POST /api/ordering/orders` after parsing: arbitrates the idempotency key, then
/// checks out once.
pub async fn place_order(
    state: &State,
    customer_id: Uuid,
    key: &IdempotencyKey,
    request: &CheckoutRequest,
) -> Result<Answer, ApiError> {
    // Payment known out of reach (its breaker open): a key never seen before gets a
    // 503 at once, with nothing written; a key already claimed or answered goes the
    // usual way (its stored answer stands).
    if state.payment.known_unavailable()
        && store::idempotency_row(&state.db, customer_id, key.as_str())
            .await?
            .is_none()
    {
        return Err(ApiError::Unavailable("payment"));
    }
    let fingerprint = request_fingerprint(&request.lines, request.shipping_address.as_ref());
    let claim = store::claim(
        &state.db,
        customer_id,
        key.as_str(),
        &fingerprint,
        state.limits.idempotency_lease,
    )
    .await?;
    let (order_id, claim, fresh, earlier) = match claim {
        Claim::Mine {
            order_id,
            claim,
            fresh,
            attempt,
        } => (order_id, claim, fresh, attempt),
        Claim::Answered { status, body } => return answered(status, body),
        Claim::OtherRequest => return Err(ApiError::KeyReused),
        Claim::Busy => return wait_for_answer(state, customer_id, key).await,
    };
    // An earlier attempt that reached payment is replayed exactly: the same amount,
    // token and lines, whatever changed since (a price, the payment method).
    let earlier = match earlier.as_deref().map(serde_json::from_str::<Attempt>) {
        None => None,
        Some(Ok(attempt)) => Some(attempt),
        Some(Err(_)) => return Err(crate::Error::Corrupt("checkout attempt").into()),
    };
    let mut reached_payment: Option<String> = None;
    let outcome = check_out(
        state,
        customer_id,
        key,
        request,
        (order_id, claim),
        earlier,
        &mut reached_payment,
    )
    .await;
    match outcome {
        Ok(answer) => Ok(answer),
        Err(ApiError::Declined) => {
            // Final: the same key and body give the same 402 (payment declines the
            // same request id again anyway).
            let body = serde_json::to_string(&ApiError::Declined.problem())
                .map_err(|_| crate::Error::Corrupt("problem"))?;
            let mut tx = state.db.begin().await?;
            if !store::answer(
                &mut tx,
                customer_id,
                key.as_str(),
                claim,
                StatusCode::PAYMENT_REQUIRED.as_u16(),
                &body,
                now_ms(),
            )
            .await?
            {
                tx.rollback().await?;
                return Err(ApiError::InProgress);
            }
            tx.commit().await?;
            Err(ApiError::Declined)
        }
        Err(error) => {
            // No final answer. If no attempt can have reached payment, the key is as
            // good as unused (the client may fix the body and reuse it); otherwise a
            // retry claims it again, with the same order id and payment request id.
            let released = if fresh && reached_payment.is_none() {
                store::forget(&state.db, customer_id, key.as_str(), claim).await
            } else {
                let attempt = reached_payment.as_deref();
                store::reopen(&state.db, customer_id, key.as_str(), claim, attempt).await
            };
            if let Err(release) = released {
                tracing::error!(error = %release, "cannot release an idempotency claim");
            }
            Err(error)
        }
    }
}

fn answered(status: u16, body: String) -> Result<Answer, ApiError> {
    let status = StatusCode::from_u16(status).map_err(|_| crate::Error::Corrupt("status"))?;
    Ok(Answer {
        status,
        body,
        replayed: true,
    })
}

/// Another request holds the key: wait (polling the store) for its answer, up to the
/// configured wait; then 409 with `Retry-After`.
async fn wait_for_answer(
    state: &State,
    customer_id: Uuid,
    key: &IdempotencyKey,
) -> Result<Answer, ApiError> {
    let deadline = Instant::now() + state.limits.idempotency_wait;
    let mut pause = Duration::from_millis(2);
    loop {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(25));
        let row = store::idempotency_row(&state.db, customer_id, key.as_str()).await?;
        match row {
            Some(row) if row.state == "done" => {
                if let Claim::Answered { status, body } = row.answer() {
                    return answered(status, body);
                }
                return Err(ApiError::InProgress);
            }
            Some(row) if row.state == "pending" => {}
            // The holder ended without an answer (e.g. payment unavailable): the
            // client decides whether to retry.
            _ => return Err(ApiError::InProgress),
        }
        if Instant::now() >= deadline {
            return Err(ApiError::InProgress);
        }
    }
}

/// What one checkout asks payment for, and the order it makes of it: kept with the
/// idempotency key when an attempt that reached payment ends without an answer, so
/// that the retry asks for exactly the same (payment's request id is the same, and a
/// different amount or token would never be authorized).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Attempt {
    lines: Vec<store::StoredLine>,
    total_cents: i64,
    currency: String,
    payment_token: String,
    shipping_address: Address,
    address_source: AddressSource,
}

impl Attempt {
    /// Prices the request and reads the customer's data, now.
    async fn new(
        state: &State,
        customer_id: Uuid,
        request: &CheckoutRequest,
    ) -> Result<Attempt, ApiError> {
        let priced = price(state, &request.lines).await?;
        let customer = customer_view(state, customer_id).await?;
        let (shipping_address, address_source) = match (&request.shipping_address, customer.address)
        {
            (Some(given), _) => (given.clone(), AddressSource::Override),
            (None, Some(known)) => (
                known,
                customer.address_source.unwrap_or(AddressSource::Replica),
            ),
            (None, None) => {
                return Err(ApiError::Invalid(vec![FieldError::new(
                    "shipping_address",
                    "is required: no address is known for you",
                )]));
            }
        };
        let Some(payment_method) = customer.payment_method else {
            return Err(ApiError::Invalid(vec![FieldError::new(
                "payment_method",
                "no payment method is known for you: set one in your profile",
            )]));
        };
        Ok(Attempt {
            lines: priced
                .lines
                .iter()
                .map(|l| store::StoredLine {
                    product_id: l.product_id,
                    name: l.name.clone(),
                    quantity: l.quantity,
                    unit_price_cents: l.unit_price_cents,
                })
                .collect(),
            total_cents: priced.total_cents,
            currency: priced.currency,
            payment_token: payment_method.token,
            shipping_address,
            address_source,
        })
    }
}

/// Checks out once, holding the idempotency claim: price, customer data (or the
/// `earlier` attempt's, replayed), payment authorization, then the order, its event
/// and the answer in one transaction. `reached_payment` is set to the attempt (JSON)
/// before payment is asked.
async fn check_out(
    state: &State,
    customer_id: Uuid,
    key: &IdempotencyKey,
    request: &CheckoutRequest,
    (order_id, claim): (Uuid, Uuid),
    earlier: Option<Attempt>,
    reached_payment: &mut Option<String>,
) -> Result<Answer, ApiError> {
    let attempt = match earlier {
        Some(attempt) => attempt,
        None => Attempt::new(state, customer_id, request).await?,
    };
    let authorization_request = AuthorizationRequest {
        request_id: payment_request_id(customer_id, key),
        order_id,
        customer_id,
        amount_cents: attempt.total_cents,
        currency: attempt.currency.clone(),
        payment_token: attempt.payment_token.clone(),
    };
    *reached_payment =
        Some(serde_json::to_string(&attempt).map_err(|_| crate::Error::Corrupt("attempt"))?);
    let deadline = Deadline::after(state.limits.payment_deadline);
    let authorized = tokio::time::timeout(
        state.limits.payment_deadline,
        deadline.scope(state.payment.authorize(&authorization_request)),
    )
    .await;
    let authorization = match authorized {
        Ok(Ok(authorization)) => authorization,
        Ok(Err(PaymentError::Declined)) => return Err(ApiError::Declined),
        Ok(Err(PaymentError::Unavailable(reason))) => {
            tracing::warn!(%reason, %order_id, "payment unavailable");
            return Err(ApiError::Unavailable("payment"));
        }
        Ok(Err(PaymentError::Unexpected(reason))) => {
            tracing::error!(%reason, %order_id, "unexpected answer from payment");
            return Err(ApiError::Unavailable("payment"));
        }
        Err(_) => {
            tracing::warn!(%order_id, "payment did not answer in time");
            return Err(ApiError::Unavailable("payment"));
        }
    };

    let accepted_at = OffsetDateTime::now_utc();
    let accepted_ms = store::ms_of(accepted_at);
    let order = store::Order {
        id: order_id,
        customer_id,
        status: OrderStatus::Accepted,
        lines: attempt.lines,
        total_cents: attempt.total_cents,
        currency: attempt.currency,
        shipping_address: attempt.shipping_address,
        address_source: attempt.address_source,
        payment_authorization_id: authorization.authorization_id,
        version: 1,
        created_at_ms: accepted_ms,
        history: vec![store::HistoryEntry {
            status: OrderStatus::Accepted,
            at_ms: accepted_ms,
            reason: None,
        }],
    };
    let event = OrderAccepted {
        order_id,
        customer_id,
        lines: order
            .lines
            .iter()
            .map(|l| OrderLine {
                product_id: l.product_id,
                quantity: l.quantity,
                unit_price_cents: l.unit_price_cents,
            })
            .collect(),
        total_cents: order.total_cents,
        currency: order.currency.clone(),
        shipping_address: order.shipping_address.clone(),
        address_source: order.address_source.clone(),
        payment_authorization_id: authorization.authorization_id,
        accepted_at,
        version: order.version,
    };
    let body =
        serde_json::to_string(&order_view(&order)).map_err(|_| crate::Error::Corrupt("order"))?;

    let mut tx = state.db.begin().await?;
    if !store::answer(
        &mut tx,
        customer_id,
        key.as_str(),
        claim,
        StatusCode::CREATED.as_u16(),
        &body,
        accepted_ms,
    )
    .await?
    {
        // The claim was taken over as abandoned: that request answers.
        tx.rollback().await?;
        return Err(ApiError::InProgress);
    }
    store::insert_order(&mut tx, &order).await?;
    Outbox::append(
        &mut tx,
        &Envelope::new(&event, &Context::new(order_id.to_string()))?,
    )
    .await?;
    state.outbox.commit(tx).await?;
    tracing::info!(%order_id, %customer_id, total_cents = order.total_cents, "order accepted");
    Ok(Answer {
        status: StatusCode::CREATED,
        body,
        replayed: false,
    })
}

fn now_ms() -> i64 {
    store::ms_of(OffsetDateTime::now_utc())
}
