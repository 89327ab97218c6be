//! `GET /internal/customers/{id}`: the live read of ordering's `sync` mode.

use agora_contracts::{Address, PaymentMethod};
use axum::http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::support::{
    Backend, berlin, call, eventually, put_address, put_payment_method, send, start, visa,
};

/// What a caller of the internal route (ordering's sync mode) decodes: the shape is a
/// contract between services.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct InternalCustomer {
    id: Uuid,
    name: String,
    email: String,
    address: Option<Address>,
    payment_method: Option<PaymentMethod>,
    version: u64,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

fn decode(body: &serde_json::Value) -> InternalCustomer {
    serde_json::from_value(body.clone()).expect("the internal shape")
}

crate::on_both_backends!(
    the_internal_route_takes_a_service_token_for_customer_only,
    the_internal_route_answers_a_profile_with_its_update_time,
    the_internal_route_answers_404_for_an_unknown_customer,
    a_spent_time_budget_is_answered_504_without_work,
);

async fn the_internal_route_answers_a_profile_with_its_update_time(backend: Backend) {
    let Some((env, customer)) = start(backend).await else {
        return;
    };
    let router = customer.router();
    let (id, token) = env.issuer.customer();
    let path = format!("/internal/customers/{id}");
    put_address(&router, &token, berlin()).await;

    // A service token; before the sign-up, name and email are empty.
    let service = env.service_token();
    let answer = call(&router, Method::GET, &path, Some(&service), None).await;
    assert_eq!(answer.status, StatusCode::OK);
    let early = decode(&answer.body);
    assert_eq!((early.id, early.version), (id, 1));
    assert_eq!((early.name.as_str(), early.email.as_str()), ("", ""));
    assert_eq!(early.address.unwrap().country, "DE");
    assert_eq!(early.payment_method, None);

    env.publish_sign_up(id, "Ada Lovelace", "ada@example.org")
        .await;
    eventually("the sign-up is merged", || async {
        call(&router, Method::GET, &path, Some(&service), None)
            .await
            .body["version"]
            == 2
    })
    .await;
    let changed = put_payment_method(&router, &token, visa()).await;
    assert_eq!(changed.body["version"], 3);

    let answer = call(&router, Method::GET, &path, Some(&service), None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.content_type, "application/json");
    let updated_at = answer.body["updated_at"].as_str().unwrap().to_owned();
    assert_eq!(
        answer.body,
        json!({
            "id": id,
            "name": "Ada Lovelace",
            "email": "ada@example.org",
            "address": {
                "line1": "Unter den Linden 1",
                "line2": null,
                "city": "Berlin",
                "postal_code": "10117",
                "country": "DE",
            },
            "payment_method": {"token": "tok_visa", "last4": "4242"},
            "version": 3,
            "updated_at": updated_at,
        })
    );
    // updated_at is the time of the last change, as its event says.
    let updated_at = OffsetDateTime::parse(&updated_at, &Rfc3339).unwrap();
    assert_eq!(decode(&answer.body).updated_at, updated_at);
    let events = env.events(3).await;
    let last: agora_contracts::PaymentMethodChanged = events[2].decode().unwrap();
    assert_eq!(updated_at, last.changed_at);
    customer.shutdown().await;
}

async fn the_internal_route_answers_404_for_an_unknown_customer(backend: Backend) {
    let Some((env, customer)) = start(backend).await else {
        return;
    };
    let router = customer.router();
    let service = env.service_token();
    for path in [
        format!("/internal/customers/{}", Uuid::now_v7()),
        "/internal/customers/not-a-uuid".to_owned(),
    ] {
        let answer = call(&router, Method::GET, &path, Some(&service), None).await;
        answer.assert_problem(StatusCode::NOT_FOUND);
        assert_eq!(answer.body["type"], "urn:agora:problem:not-found");
    }
    customer.shutdown().await;
}

async fn a_spent_time_budget_is_answered_504_without_work(backend: Backend) {
    let Some((env, customer)) = start(backend).await else {
        return;
    };
    let router = customer.router();
    let (id, token) = env.issuer.customer();
    put_address(&router, &token, berlin()).await;
    let path = format!("/internal/customers/{id}");
    let authorization = format!("Bearer {}", env.service_token());
    let answer = send(
        &router,
        Method::GET,
        &path,
        &[("agora-budget-ms", "0"), ("authorization", &authorization)],
        None,
    )
    .await;
    answer.assert_problem(StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(answer.body["type"], "urn:agora:problem:deadline-exceeded");
    let answer = send(
        &router,
        Method::GET,
        &path,
        &[
            ("agora-budget-ms", "5000"),
            ("authorization", &authorization),
        ],
        None,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["version"], 1);

    // The public routes too; a write past the budget does not happen.
    let authorization = format!("Bearer {token}");
    let spent = [
        ("authorization", authorization.as_str()),
        ("agora-budget-ms", "0"),
    ];
    let answer = send(&router, Method::GET, "/api/customers/me", &spent, None).await;
    answer.assert_problem(StatusCode::GATEWAY_TIMEOUT);
    let answer = send(
        &router,
        Method::PUT,
        "/api/customers/me/payment-method",
        &spent,
        Some(("application/json", visa().to_string().into_bytes())),
    )
    .await;
    answer.assert_problem(StatusCode::GATEWAY_TIMEOUT);
    let service = env.service_token();
    let answer = call(&router, Method::GET, &path, Some(&service), None).await;
    assert_eq!(answer.body["payment_method"], json!(null));
    assert_eq!(answer.body["version"], 1);
    customer.shutdown().await;
}

async fn the_internal_route_takes_a_service_token_for_customer_only(backend: Backend) {
    let Some((env, customer)) = start(backend).await else {
        return;
    };
    let router = customer.router();
    let (id, token) = env.issuer.customer();
    put_address(&router, &token, berlin()).await;
    let path = format!("/internal/customers/{id}");

    // No token, a token for another service, another deployment's: 401.
    let other_audience = env
        .internal
        .service("ordering")
        .token_for("payment")
        .unwrap();
    let other_deployment = agora_auth::InternalKey::generate()
        .service("ordering")
        .token_for("customer")
        .unwrap();
    for refused in [
        None,
        Some(other_audience.as_str()),
        Some(other_deployment.as_str()),
    ] {
        let answer = call(&router, Method::GET, &path, refused, None).await;
        answer.assert_problem(StatusCode::UNAUTHORIZED);
        assert_eq!(answer.body.get("address"), None, "nothing of the profile");
    }
    // A user's token, the customer's own or an admin's: 403.
    let (_, admin) = env.issuer.admin();
    for user in [&token, &admin] {
        let answer = call(&router, Method::GET, &path, Some(user), None).await;
        answer.assert_problem(StatusCode::FORBIDDEN);
    }
    // The service token: the profile.
    let answer = call(
        &router,
        Method::GET,
        &path,
        Some(&env.service_token()),
        None,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["id"], json!(id));
    customer.shutdown().await;
}
