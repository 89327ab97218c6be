//! The envelope: CloudEvents shape, round trip, forward compatibility, bus mapping.

use agora_bus::StreamConfig;
use agora_contracts::Event;
use agora_messaging::{Context, Envelope, Error, header, stream_config};
use serde_json::json;

use crate::support::Credited;

fn event() -> Credited {
    Credited {
        account_id: "acct-7".into(),
        amount: 42,
        version: 3,
    }
}

#[test]
fn round_trips_through_json_with_the_cloudevents_attributes() {
    let context = Context::new("order-1")
        .with_causation("request-9")
        .with_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    let envelope = Envelope::new(&event(), &context).unwrap();

    let json: serde_json::Value = serde_json::from_slice(&envelope.to_json().unwrap()).unwrap();
    assert_eq!(json["specversion"], "1.0");
    assert_eq!(json["type"], "Credited");
    assert_eq!(json["source"], "ledger");
    assert_eq!(json["subject"], "acct-7");
    assert_eq!(json["datacontenttype"], "application/json");
    assert_eq!(json["correlationid"], "order-1");
    assert_eq!(json["causationid"], "request-9");
    assert_eq!(json["data"]["version"], 3);
    assert_eq!(json["id"], envelope.id.to_string());
    assert_eq!(envelope.id.get_version_num(), 7);
    let time = json["time"].as_str().unwrap();
    time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339)
        .expect("time is RFC 3339");

    let back = Envelope::from_json(&envelope.to_json().unwrap()).unwrap();
    assert_eq!(back, envelope);
    assert_eq!(back.decode::<Credited>().unwrap(), event());
}

#[test]
fn unknown_fields_and_extensions_are_ignored() {
    let payload = json!({
        "specversion": "1.0",
        "id": "01890a5d-ac96-774b-bcce-b302099a8057",
        "type": "Credited",
        "source": "ledger",
        "subject": "acct-7",
        "time": "2025-01-02T03:04:05.123456Z",
        "datacontenttype": "application/json",
        "correlationid": "order-1",
        "someextension": {"added": "later"},
        "data": {"account_id": "acct-7", "amount": 42, "version": 3, "currency": "EUR"}
    });
    let envelope = Envelope::from_json(payload.to_string().as_bytes()).unwrap();
    assert_eq!(envelope.causation_id, None);
    assert_eq!(envelope.traceparent, None);
    assert_eq!(envelope.decode::<Credited>().unwrap(), event());
}

#[test]
fn optional_attributes_may_be_absent() {
    let payload = json!({
        "specversion": "1.0",
        "id": "01890a5d-ac96-774b-bcce-b302099a8057",
        "type": "Credited",
        "source": "ledger",
        "subject": "acct-7",
        "time": "2025-01-02T03:04:05Z",
        "correlationid": "order-1",
        "data": {"account_id": "acct-7", "amount": 42, "version": 3}
    });
    let envelope = Envelope::from_json(payload.to_string().as_bytes()).unwrap();
    assert_eq!(envelope.datacontenttype, "application/json");
}

#[test]
fn garbage_and_foreign_spec_versions_are_refused_without_quoting_the_payload() {
    let secret = b"not json, card 4111111111111111";
    let error = Envelope::from_json(secret).unwrap_err();
    assert!(matches!(error, Error::Decode(_)));
    assert!(!error.to_string().contains("4111"), "{error}");

    let mut json =
        serde_json::to_value(Envelope::new(&event(), &Context::new("c")).unwrap()).unwrap();
    json["specversion"] = "2.0".into();
    assert!(Envelope::from_json(json.to_string().as_bytes()).is_err());
}

#[test]
fn decoding_as_another_event_type_fails() {
    let envelope = Envelope::new(&event(), &Context::new("c")).unwrap();
    let error = envelope
        .decode::<agora_contracts::PriceChanged>()
        .unwrap_err();
    assert!(matches!(error, Error::WrongEventType { .. }), "{error}");
    assert!(!envelope.is::<agora_contracts::PriceChanged>());
    assert!(envelope.is::<Credited>());
}

#[test]
fn a_contract_event_round_trips() {
    let price = agora_contracts::PriceChanged {
        product_id: uuid::Uuid::now_v7(),
        price: serde_json::from_value(json!({"amount_cents": 1299, "currency": "EUR"}))
            .expect("Money shape"),
        changed_at: time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap(),
        version: 2,
    };
    let envelope = Envelope::new(&price, &Context::new("p")).unwrap();
    assert_eq!(envelope.subject, price.product_id.to_string());
    assert_eq!(
        envelope.bus_subject(),
        agora_contracts::bus_subject::<agora_contracts::PriceChanged>()
    );
    let back = Envelope::from_json(&envelope.to_json().unwrap()).unwrap();
    assert_eq!(
        back.decode::<agora_contracts::PriceChanged>().unwrap(),
        price
    );
}

#[test]
fn the_context_of_an_effect_follows_its_cause() {
    let cause = Envelope::new(
        &event(),
        &Context::new("order-1").with_traceparent("00-aa-bb-01"),
    )
    .unwrap();
    let context = Context::caused_by(&cause);
    assert_eq!(context.correlation_id, "order-1");
    assert_eq!(context.causation_id, Some(cause.id.to_string()));
    assert_eq!(context.traceparent.as_deref(), Some("00-aa-bb-01"));
    assert_eq!(cause.context_for_effects(), context);
}

#[test]
fn maps_onto_a_bus_message() {
    let envelope =
        Envelope::new(&event(), &Context::new("c").with_traceparent("00-aa-bb-01")).unwrap();
    let message = envelope.to_message().unwrap();
    assert_eq!(message.id, envelope.id.to_string());
    assert_eq!(message.subject, agora_contracts::bus_subject::<Credited>());
    assert_eq!(message.subject, "ledger.Credited");
    assert_eq!(message.headers[header::CE_TYPE], Credited::TYPE);
    assert_eq!(message.headers[header::CE_ID], envelope.id.to_string());
    assert_eq!(message.headers[header::TRACEPARENT], "00-aa-bb-01");
    assert_eq!(Envelope::from_json(&message.payload).unwrap(), envelope);

    let untraced = Envelope::new(&event(), &Context::new("c"))
        .unwrap()
        .to_message()
        .unwrap();
    assert!(!untraced.headers.contains_key(header::TRACEPARENT));
}

#[test]
fn a_message_the_bus_would_refuse_is_refused_up_front() {
    let envelope = Envelope::new(
        &event(),
        &Context::new("c").with_traceparent("bad\r\nheader"),
    )
    .unwrap();
    assert!(matches!(envelope.to_message(), Err(Error::Bus(_))));
}

#[test]
fn one_stream_per_source_service() {
    assert_eq!(
        stream_config("ordering"),
        StreamConfig::new("ORDERING", ["ordering.>"])
    );
}
