//! The wire contract of every event: JSON round trips, tolerance of newer and older
//! payloads, unique type names, pinned JSON shapes, and the committed JSON Schemas
//! that a change must stay compatible with.

mod compat;
mod edits;
mod schemas;

use std::collections::{BTreeMap, BTreeSet};

use agora_contracts::*;
use schemars::JsonSchema;
use schemars::generate::Contract;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

const USER: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
const PRODUCT: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0002);
const OTHER_PRODUCT: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0003);
const ORDER: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0004);
const AUTHORIZATION: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0005);
const TOKEN: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0006);
const CAPTURE: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0007);
const REFUND: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0008);
const SHIPMENT: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0009);

const AT: OffsetDateTime = datetime!(2026-03-01 12:30:45.123 UTC);
const LATER: OffsetDateTime = datetime!(2026-03-01 13:30:45 +01:00);

fn address() -> Address {
    Address {
        line1: "Hauptstraße 1".into(),
        line2: Some("c/o Agora".into()),
        city: "Berlin".into(),
        postal_code: "10115".into(),
        country: "DE".into(),
    }
}

fn eur(amount_cents: i64) -> Money {
    Money {
        amount_cents,
        currency: "EUR".into(),
    }
}

fn stock_lines() -> Vec<StockLine> {
    vec![
        StockLine {
            product_id: PRODUCT,
            quantity: 2,
        },
        StockLine {
            product_id: OTHER_PRODUCT,
            quantity: 1,
        },
    ]
}

fn order_accepted() -> OrderAccepted {
    OrderAccepted {
        order_id: ORDER,
        customer_id: USER,
        lines: vec![
            OrderLine {
                product_id: PRODUCT,
                quantity: 2,
                unit_price_cents: 1250,
            },
            OrderLine {
                product_id: OTHER_PRODUCT,
                quantity: 1,
                unit_price_cents: 999,
            },
        ],
        total_cents: 3499,
        currency: "EUR".into(),
        shipping_address: address(),
        address_source: AddressSource::Replica,
        payment_authorization_id: AUTHORIZATION,
        accepted_at: AT,
        version: 1,
    }
}

fn user_signed_up() -> UserSignedUp {
    UserSignedUp {
        user_id: USER,
        email: "ada@example.com".into(),
        name: "Ada Lovelace".into(),
        role: Role::Customer,
        signed_up_at: AT,
        version: 1,
    }
}

/// One sample of an event type, with its type erased so that every test can walk all
/// of them. Samples set every optional field, so that dropping fields is meaningful.
struct Case {
    source: &'static str,
    ty: &'static str,
    bus_subject: String,
    subject: String,
    version: u64,
    /// The JSON field that holds the aggregate id.
    subject_field: &'static str,
    json: Value,
    /// Decodes a payload as this event type and says whether it equals the sample.
    decodes_to_sample: Box<dyn Fn(Value) -> Result<bool, serde_json::Error>>,
    /// Decodes a payload as this event type.
    decodes: fn(Value) -> Result<(), serde_json::Error>,
    /// The event type's JSON Schema, for readers or for writers.
    schema: fn(Contract) -> Value,
}

fn case<E: Event + JsonSchema>(sample: E, subject_field: &'static str) -> Case {
    let text = serde_json::to_string(&sample).expect("serializes");
    let json: Value = serde_json::from_str(&text).expect("is JSON");
    let from_text: E = serde_json::from_str(&text).expect("deserializes");
    assert_eq!(from_text, sample, "{} round trip through text", E::TYPE);
    Case {
        source: E::SOURCE,
        ty: E::TYPE,
        bus_subject: bus_subject::<E>(),
        subject: sample.subject(),
        version: sample.version(),
        subject_field,
        json,
        decodes_to_sample: Box::new(move |value| {
            serde_json::from_value::<E>(value).map(|event| event == sample)
        }),
        decodes: |value| serde_json::from_value::<E>(value).map(drop),
        schema: schemas::generate::<E>,
    }
}

fn cases() -> Vec<Case> {
    vec![
        // identity
        case(user_signed_up(), "user_id"),
        case(
            UserSignedIn {
                user_id: USER,
                token_id: TOKEN,
                signed_in_at: AT,
                expires_at: LATER,
                version: 2,
            },
            "user_id",
        ),
        case(
            UserSignedOut {
                user_id: USER,
                token_id: TOKEN,
                signed_out_at: LATER,
                version: 3,
            },
            "user_id",
        ),
        case(
            PasswordChanged {
                user_id: USER,
                changed_at: AT,
                version: 4,
            },
            "user_id",
        ),
        // customer
        case(
            CustomerRegistered {
                customer_id: USER,
                name: "Ada Lovelace".into(),
                email: "ada@example.com".into(),
                registered_at: AT,
                version: 1,
            },
            "customer_id",
        ),
        case(
            CustomerAddressChanged {
                customer_id: USER,
                address: address(),
                changed_at: AT,
                version: 2,
            },
            "customer_id",
        ),
        case(
            PaymentMethodChanged {
                customer_id: USER,
                payment_method: PaymentMethod {
                    token: "tok_visa".into(),
                    last4: "4242".into(),
                },
                changed_at: AT,
                version: 3,
            },
            "customer_id",
        ),
        // catalog
        case(
            ProductAdded {
                product_id: PRODUCT,
                name: "Teapot".into(),
                description: "Short and stout".into(),
                image_url: Some("/images/teapot.png".into()),
                added_at: AT,
                version: 1,
            },
            "product_id",
        ),
        case(
            ProductUpdated {
                product_id: PRODUCT,
                name: "Teapot, large".into(),
                description: "Short and stout, 1.5 l".into(),
                image_url: Some("/images/teapot-large.png".into()),
                updated_at: AT,
                version: 2,
            },
            "product_id",
        ),
        case(
            ProductDeleted {
                product_id: PRODUCT,
                deleted_at: AT,
                version: 3,
            },
            "product_id",
        ),
        // ordering
        case(
            PriceChanged {
                product_id: PRODUCT,
                price: eur(1250),
                changed_at: AT,
                version: 7,
            },
            "product_id",
        ),
        case(order_accepted(), "order_id"),
        case(
            OrderCancelled {
                order_id: ORDER,
                customer_id: USER,
                reason: CancelReason::OutOfStock,
                detail: Some("teapot: 0 of 2 available".into()),
                cancelled_at: AT,
                version: 2,
            },
            "order_id",
        ),
        case(
            OrderShipped {
                order_id: ORDER,
                customer_id: USER,
                shipment_id: SHIPMENT,
                tracking_number: Some("AG123456789DE".into()),
                shipped_at: AT,
                version: 4,
            },
            "order_id",
        ),
        // payment
        case(
            PaymentAuthorized {
                authorization_id: AUTHORIZATION,
                order_id: ORDER,
                customer_id: USER,
                amount: eur(3499),
                authorized_at: AT,
                expires_at: Some(LATER),
                version: 1,
            },
            "authorization_id",
        ),
        case(
            CustomerBilled {
                authorization_id: AUTHORIZATION,
                capture_id: CAPTURE,
                order_id: ORDER,
                customer_id: USER,
                amount: eur(3499),
                billed_at: AT,
                version: 2,
            },
            "authorization_id",
        ),
        case(
            PaymentRefunded {
                authorization_id: AUTHORIZATION,
                refund_id: REFUND,
                order_id: ORDER,
                customer_id: USER,
                amount: eur(3499),
                refunded_at: AT,
                version: 3,
            },
            "authorization_id",
        ),
        case(
            AuthorizationVoided {
                authorization_id: AUTHORIZATION,
                order_id: ORDER,
                customer_id: USER,
                amount: eur(3499),
                voided_at: AT,
                version: 2,
            },
            "authorization_id",
        ),
        case(
            PaymentFailed {
                authorization_id: AUTHORIZATION,
                order_id: ORDER,
                customer_id: USER,
                operation: PaymentOperation::Capture,
                reason: "card_declined".into(),
                failed_at: AT,
                version: 2,
            },
            "authorization_id",
        ),
        // inventory
        case(
            StockReserved {
                order_id: ORDER,
                lines: stock_lines(),
                reserved_at: AT,
                version: 1,
            },
            "order_id",
        ),
        case(
            StockReservationFailed {
                order_id: ORDER,
                shortages: vec![StockShortage {
                    product_id: PRODUCT,
                    requested: 2,
                    available: 0,
                }],
                failed_at: AT,
                version: 1,
            },
            "order_id",
        ),
        case(
            StockReleased {
                order_id: ORDER,
                lines: stock_lines(),
                reason: Some(CancelReason::PaymentFailed),
                released_at: AT,
                version: 2,
            },
            "order_id",
        ),
        // fulfilment
        case(
            OrderReadyForShipping {
                order_id: ORDER,
                customer_id: USER,
                ready_at: AT,
                version: 4,
            },
            "order_id",
        ),
        case(
            FulfilmentFailed {
                order_id: ORDER,
                customer_id: USER,
                reason: CancelReason::Timeout,
                detail: Some("no StockReserved within 30 s".into()),
                failed_at: AT,
                version: 3,
            },
            "order_id",
        ),
        // shipping
        case(
            ShipmentDispatched {
                shipment_id: SHIPMENT,
                order_id: ORDER,
                customer_id: USER,
                address: address(),
                carrier: Some("DHL".into()),
                tracking_number: Some("AG123456789DE".into()),
                dispatched_at: AT,
                version: 1,
            },
            "shipment_id",
        ),
    ]
}

/// The top-level fields each event may omit. Any other field is required, which is
/// what older consumers rely on; adding a required field to an existing event is a
/// breaking change and must fail here.
fn optional_fields() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    let mut optional: BTreeMap<&'static str, BTreeSet<&'static str>> = ALL_TYPES
        .iter()
        .map(|&(_, ty)| (ty, BTreeSet::new()))
        .collect();
    for (ty, field) in [
        ("ProductAdded", "image_url"),
        ("ProductUpdated", "image_url"),
        ("OrderCancelled", "detail"),
        ("OrderShipped", "tracking_number"),
        ("PaymentAuthorized", "expires_at"),
        ("StockReleased", "reason"),
        ("FulfilmentFailed", "detail"),
        ("ShipmentDispatched", "carrier"),
        ("ShipmentDispatched", "tracking_number"),
    ] {
        optional
            .get_mut(ty)
            .expect("a known event type")
            .insert(field);
    }
    optional
}

/// Adds fields of every JSON kind to `value` and to every object nested in it, as a
/// newer producer might.
fn add_future_fields(value: &mut Value) {
    match value {
        Value::Object(object) => {
            for nested in object.values_mut() {
                add_future_fields(nested);
            }
            object.insert("future_object".into(), json!({"a": 1, "b": [true, null]}));
            object.insert("future_array".into(), json!([1, "two", {"three": 3}]));
            object.insert("future_scalar".into(), json!(42));
            object.insert("future_string".into(), json!("text"));
            object.insert("future_null".into(), Value::Null);
        }
        Value::Array(items) => items.iter_mut().for_each(add_future_fields),
        _ => {}
    }
}

#[test]
fn every_event_round_trips_through_json() {
    for case in cases() {
        assert!(
            (case.decodes_to_sample)(case.json.clone()).expect("decodes"),
            "{}: decoded value differs from the sample",
            case.ty
        );
    }
}

#[test]
fn every_event_accepts_fields_from_a_newer_version() {
    for case in cases() {
        let mut newer = case.json.clone();
        add_future_fields(&mut newer);
        let equal = (case.decodes_to_sample)(newer)
            .unwrap_or_else(|error| panic!("{}: newer payload rejected: {error}", case.ty));
        assert!(
            equal,
            "{}: unknown fields changed the decoded value",
            case.ty
        );
    }
}

#[test]
fn optional_fields_may_be_missing_or_null_and_the_rest_are_required() {
    let expected = optional_fields();
    for case in cases() {
        let Value::Object(object) = &case.json else {
            panic!("{}: not a JSON object", case.ty)
        };
        let mut omissible = BTreeSet::new();
        for field in object.keys() {
            let mut older = object.clone();
            older.remove(field);
            if (case.decodes)(Value::Object(older)).is_ok() {
                omissible.insert(field.as_str());
                let mut null = object.clone();
                null.insert(field.clone(), Value::Null);
                (case.decodes)(Value::Object(null)).unwrap_or_else(|error| {
                    panic!("{}: optional {field} as null rejected: {error}", case.ty)
                });
            }
        }
        assert_eq!(omissible, expected[case.ty], "{}: optional fields", case.ty);
        for field in &expected[case.ty] {
            assert!(
                object.contains_key(*field),
                "{}: the sample should set {field}",
                case.ty
            );
        }
    }
}

#[test]
fn address_line2_is_optional() {
    let without: Address = serde_json::from_value(json!({
        "line1": "Hauptstraße 1",
        "city": "Berlin",
        "postal_code": "10115",
        "country": "DE",
    }))
    .expect("decodes without line2");
    assert_eq!(without.line2, None);
    let encoded = serde_json::to_value(&without).expect("serializes");
    assert!(encoded.get("line2").is_none(), "absent line2 is omitted");
}

#[test]
fn every_event_carries_a_version_and_its_aggregate_id_as_subject() {
    for case in cases() {
        assert_eq!(case.json["version"], json!(case.version), "{}", case.ty);
        assert_eq!(
            case.json[case.subject_field],
            json!(case.subject),
            "{}: subject is the aggregate id",
            case.ty
        );
        Uuid::parse_str(&case.subject)
            .unwrap_or_else(|error| panic!("{}: subject is not a UUID: {error}", case.ty));
    }
}

#[test]
fn type_and_source_pairs_are_unique_and_listed_in_all_types() {
    let cases = cases();
    let listed: BTreeSet<(&str, &str)> = ALL_TYPES.iter().copied().collect();
    assert_eq!(listed.len(), ALL_TYPES.len(), "ALL_TYPES has duplicates");

    let types: BTreeSet<&str> = ALL_TYPES.iter().map(|&(_, ty)| ty).collect();
    assert_eq!(types.len(), ALL_TYPES.len(), "a type name is used twice");

    let sampled: BTreeSet<(&str, &str)> = cases.iter().map(|c| (c.source, c.ty)).collect();
    assert_eq!(sampled.len(), cases.len(), "an event is sampled twice");
    assert_eq!(sampled, listed, "samples and ALL_TYPES disagree");

    let services = [
        "identity",
        "customer",
        "catalog",
        "ordering",
        "payment",
        "inventory",
        "fulfilment",
        "shipping",
    ];
    for case in &cases {
        assert!(
            services.contains(&case.source),
            "{}: unknown source",
            case.ty
        );
        assert_eq!(case.bus_subject, format!("{}.{}", case.source, case.ty));
    }
}

#[test]
fn event_names_match_the_design_brief() {
    let table = [
        ("identity", "UserSignedUp"),
        ("identity", "UserSignedIn"),
        ("identity", "UserSignedOut"),
        ("identity", "PasswordChanged"),
        ("customer", "CustomerRegistered"),
        ("customer", "CustomerAddressChanged"),
        ("customer", "PaymentMethodChanged"),
        ("catalog", "ProductAdded"),
        ("catalog", "ProductUpdated"),
        ("catalog", "ProductDeleted"),
        ("ordering", "PriceChanged"),
        ("ordering", "OrderAccepted"),
        ("ordering", "OrderCancelled"),
        ("ordering", "OrderShipped"),
        ("payment", "PaymentAuthorized"),
        ("payment", "CustomerBilled"),
        ("payment", "PaymentRefunded"),
        ("payment", "AuthorizationVoided"),
        ("payment", "PaymentFailed"),
        ("inventory", "StockReserved"),
        ("inventory", "StockReservationFailed"),
        ("inventory", "StockReleased"),
        ("fulfilment", "OrderReadyForShipping"),
        ("fulfilment", "FulfilmentFailed"),
        ("shipping", "ShipmentDispatched"),
    ];
    assert_eq!(ALL_TYPES, table.as_slice());
    assert_eq!(bus_subject::<OrderAccepted>(), "ordering.OrderAccepted");
    assert_eq!(bus_subject::<PasswordChanged>(), "identity.PasswordChanged");
}

#[test]
fn order_accepted_json_is_stable() {
    let encoded = serde_json::to_value(order_accepted()).expect("serializes");
    assert_eq!(
        encoded,
        json!({
            "order_id": "01900000-0000-7000-8000-000000000004",
            "customer_id": "01900000-0000-7000-8000-000000000001",
            "lines": [
                {
                    "product_id": "01900000-0000-7000-8000-000000000002",
                    "quantity": 2,
                    "unit_price_cents": 1250
                },
                {
                    "product_id": "01900000-0000-7000-8000-000000000003",
                    "quantity": 1,
                    "unit_price_cents": 999
                }
            ],
            "total_cents": 3499,
            "currency": "EUR",
            "shipping_address": {
                "line1": "Hauptstraße 1",
                "line2": "c/o Agora",
                "city": "Berlin",
                "postal_code": "10115",
                "country": "DE"
            },
            "address_source": "replica",
            "payment_authorization_id": "01900000-0000-7000-8000-000000000005",
            "accepted_at": "2026-03-01T12:30:45.123Z",
            "version": 1
        })
    );
}

#[test]
fn user_signed_up_json_is_stable() {
    let encoded = serde_json::to_value(user_signed_up()).expect("serializes");
    assert_eq!(
        encoded,
        json!({
            "user_id": "01900000-0000-7000-8000-000000000001",
            "email": "ada@example.com",
            "name": "Ada Lovelace",
            "role": "customer",
            "signed_up_at": "2026-03-01T12:30:45.123Z",
            "version": 1
        })
    );
}

#[test]
fn money_and_payment_method_use_the_api_shapes() {
    let billed = CustomerBilled {
        authorization_id: AUTHORIZATION,
        capture_id: CAPTURE,
        order_id: ORDER,
        customer_id: USER,
        amount: eur(3499),
        billed_at: AT,
        version: 2,
    };
    let encoded = serde_json::to_value(billed).expect("serializes");
    assert_eq!(
        encoded["amount"],
        json!({"amount_cents": 3499, "currency": "EUR"})
    );

    let method = PaymentMethod {
        token: "tok_visa".into(),
        last4: "4242".into(),
    };
    let encoded = serde_json::to_value(method).expect("serializes");
    assert_eq!(encoded, json!({"token": "tok_visa", "last4": "4242"}));
}

#[test]
fn times_keep_their_instant_across_offsets() {
    // LATER is written with a +01:00 offset; it must decode to the same instant.
    let signed_in = UserSignedIn {
        user_id: USER,
        token_id: TOKEN,
        signed_in_at: AT,
        expires_at: LATER,
        version: 2,
    };
    let encoded = serde_json::to_value(&signed_in).expect("serializes");
    assert_eq!(encoded["expires_at"], json!("2026-03-01T13:30:45+01:00"));
    let decoded: UserSignedIn = serde_json::from_value(encoded).expect("decodes");
    assert_eq!(decoded.expires_at, datetime!(2026-03-01 12:30:45 UTC));
}

#[test]
fn string_enums_keep_values_they_do_not_know() {
    let reason: CancelReason = serde_json::from_value(json!("fraud_suspected")).expect("decodes");
    assert_eq!(reason, CancelReason::Other("fraud_suspected".into()));
    assert_eq!(
        serde_json::to_value(&reason).expect("serializes"),
        json!("fraud_suspected")
    );

    for (known, text) in [
        (CancelReason::OutOfStock, "out_of_stock"),
        (CancelReason::PaymentFailed, "payment_failed"),
        (CancelReason::Timeout, "timeout"),
    ] {
        assert_eq!(
            serde_json::to_value(&known).expect("serializes"),
            json!(text)
        );
        assert_eq!(
            serde_json::from_value::<CancelReason>(json!(text)).expect("decodes"),
            known
        );
        assert_eq!(known.to_string(), text);
    }

    let role: Role = serde_json::from_value(json!("auditor")).expect("decodes");
    assert_eq!(role.as_str(), "auditor");
    let source: AddressSource = serde_json::from_value(json!("customer_service")).expect("decodes");
    assert_eq!(source, AddressSource::CustomerService);
    let operation: PaymentOperation =
        serde_json::from_value(json!("partial_capture")).expect("decodes");
    assert_eq!(operation, PaymentOperation::Other("partial_capture".into()));

    // A cancellation from a newer ordering, with a reason this version does not know.
    let mut cancelled = json!({
        "order_id": "01900000-0000-7000-8000-000000000004",
        "customer_id": "01900000-0000-7000-8000-000000000001",
        "reason": "address_undeliverable",
        "cancelled_at": "2026-03-01T12:30:45Z",
        "version": 2
    });
    add_future_fields(&mut cancelled);
    let decoded: OrderCancelled = serde_json::from_value(cancelled).expect("decodes");
    assert_eq!(
        decoded.reason,
        CancelReason::Other("address_undeliverable".into())
    );
    assert_eq!(decoded.detail, None);
}

#[test]
fn string_enums_refuse_non_strings() {
    assert!(serde_json::from_value::<CancelReason>(json!(3)).is_err());
    assert!(serde_json::from_value::<Role>(json!({"role": "admin"})).is_err());
}
