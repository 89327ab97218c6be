//! The public routes: every answer they give, and input validation.

use agora_contracts::Role;
use axum::http::{Method, StatusCode, header};
use serde_json::json;
use uuid::Uuid;

use crate::support::{
    Backend, berlin, call, get_me, put_address, put_payment_method, send, start, visa,
};

crate::on_both_backends!(
    a_customer_without_a_profile_is_answered_with_what_is_known,
    the_address_is_set_normalized_and_read_back,
    the_payment_method_is_set_and_read_back,
    every_change_bumps_the_version_and_a_repeat_changes_nothing,
    each_caller_sees_only_their_own_profile,
    admins_have_a_profile_of_their_own,
    requests_without_a_valid_token_are_401,
    callers_without_the_customer_or_admin_role_are_403,
    invalid_addresses_are_422_naming_every_field,
    invalid_payment_methods_are_422_naming_every_field,
    bodies_of_the_wrong_shape_or_kind_are_refused,
    bodies_over_64_kib_are_413,
    tokens_issued_before_a_password_change_are_refused,
);

async fn a_customer_without_a_profile_is_answered_with_what_is_known(backend: Backend) {
    let Some((env, customer)) = start(backend).await else {
        return;
    };
    let (id, token) = env.issuer.customer();
    let answer = get_me(&customer.router(), &token).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.content_type, "application/json");
    assert_eq!(
        answer.body,
        json!({
            "id": id,
            "name": "",
            "email": "",
            "address": null,
            "payment_method": null,
            "version": 0,
        })
    );
    customer.shutdown().await;
}

async fn the_address_is_set_normalized_and_read_back(backend: Backend) {
    let Some((env, customer)) = start(backend).await else {
        return;
    };
    let router = customer.router();
    let (id, token) = env.issuer.customer();
    let answer = put_address(
        &router,
        &token,
        json!({
            "line1": "  Unter den Linden 1 ",
            "line2": " Hinterhaus ",
            "city": "Berlin",
            "postal_code": " 10117",
            "country": "de",
        }),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let expected = json!({
        "id": id,
        "name": "",
        "email": "",
        "address": {
            "line1": "Unter den Linden 1",
            "line2": "Hinterhaus",
            "city": "Berlin",
            "postal_code": "10117",
            "country": "DE",
        },
        "payment_method": null,
        "version": 1,
    });
    assert_eq!(answer.body, expected);
    assert_eq!(get_me(&router, &token).await.body, expected);

    // Without line2 (absent, null or blank alike): null.
    for line2 in [None, Some(json!(null)), Some(json!("   "))] {
        let mut address = json!({
            "line1": "Rue de Rivoli 1",
            "city": "Paris",
            "postal_code": "75001",
            "country": "FR",
        });
        if let Some(line2) = line2 {
            address["line2"] = line2;
        }
        let answer = put_address(&router, &token, address).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(answer.body["address"]["line2"], json!(null));
        assert_eq!(answer.body["address"]["country"], "FR");
    }
    customer.shutdown().await;
}

async fn the_payment_method_is_set_and_read_back(backend: Backend) {
    let Some((env, customer)) = start(backend).await else {
        return;
    };
    let router = customer.router();
    let (id, token) = env.issuer.customer();
    let answer = put_payment_method(&router, &token, visa()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let expected = json!({
        "id": id,
        "name": "",
        "email": "",
        "address": null,
        "payment_method": {"token": "tok_visa", "last4": "4242"},
        "version": 1,
    });
    assert_eq!(answer.body, expected);
    assert_eq!(get_me(&router, &token).await.body, expected);
    customer.shutdown().await;
}

async fn every_change_bumps_the_version_and_a_repeat_changes_nothing(backend: Backend) {
    let Some((env, customer)) = start(backend).await else {
        return;
    };
    let router = customer.router();
    let (_, token) = env.issuer.customer();
    assert_eq!(
        put_address(&router, &token, berlin()).await.body["version"],
        1
    );
    assert_eq!(
        put_payment_method(&router, &token, visa()).await.body["version"],
        2
    );
    // The same values again: no change.
    assert_eq!(
        put_address(&router, &token, berlin()).await.body["version"],
        2
    );
    assert_eq!(
        put_payment_method(&router, &token, visa()).await.body["version"],
        2
    );
    let declined = json!({"token": "tok_declined", "last4": "0002"});
    let answer = put_payment_method(&router, &token, declined).await;
    assert_eq!(answer.body["version"], 3);
    assert_eq!(answer.body["payment_method"]["token"], "tok_declined");
    // Only the second line differs: a change.
    let mut berlin2 = berlin();
    berlin2["line2"] = json!("2. OG");
    let answer = put_address(&router, &token, berlin2).await;
    assert_eq!(answer.body["version"], 4);
    assert_eq!(answer.body["payment_method"]["token"], "tok_declined");
    assert_eq!(get_me(&router, &token).await.body["version"], 4);
    customer.shutdown().await;
}

async fn each_caller_sees_only_their_own_profile(backend: Backend) {
    let Some((env, customer)) = start(backend).await else {
        return;
    };
    let router = customer.router();
    let (ada, ada_token) = env.issuer.customer();
    let (bob, bob_token) = env.issuer.customer();
    put_address(&router, &ada_token, berlin()).await;
    let answer = get_me(&router, &bob_token).await;
    assert_eq!(answer.body["id"], json!(bob));
    assert_eq!(answer.body["address"], json!(null));
    assert_eq!(answer.body["version"], 0);
    assert_eq!(get_me(&router, &ada_token).await.body["id"], json!(ada));
    customer.shutdown().await;
}

async fn admins_have_a_profile_of_their_own(backend: Backend) {
    let Some((env, customer)) = start(backend).await else {
        return;
    };
    let router = customer.router();
    let (id, token) = env.issuer.admin();
    let answer = put_address(&router, &token, berlin()).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["id"], json!(id));
    assert_eq!(get_me(&router, &token).await.body["version"], 1);
    customer.shutdown().await;
}

async fn requests_without_a_valid_token_are_401(backend: Backend) {
    let Some((_env, customer)) = start(backend).await else {
        return;
    };
    let router = customer.router();
    let stranger = agora_auth::TestIssuer::new();
    let (_, foreign_token) = stranger.customer();
    let tokens = [None, Some("not-a-jwt"), Some(foreign_token.as_str())];
    for token in tokens {
        for (method, path, body) in [
            (Method::GET, "/api/customers/me", None),
            (Method::PUT, "/api/customers/me/address", Some(berlin())),
            (
                Method::PUT,
                "/api/customers/me/payment-method",
                Some(visa()),
            ),
        ] {
            let answer = call(&router, method, path, token, body).await;
            answer.assert_problem(StatusCode::UNAUTHORIZED);
            assert_eq!(answer.headers[header::WWW_AUTHENTICATE], "Bearer");
            assert_eq!(answer.body["type"], "urn:agora:problem:unauthorized");
        }
    }
    // The scheme must be Bearer.
    let answer = send(
        &router,
        Method::GET,
        "/api/customers/me",
        &[("authorization", "Basic YWRhOnNlY3JldA==")],
        None,
    )
    .await;
    answer.assert_problem(StatusCode::UNAUTHORIZED);
    customer.shutdown().await;
}

async fn callers_without_the_customer_or_admin_role_are_403(backend: Backend) {
    let Some((env, customer)) = start(backend).await else {
        return;
    };
    let router = customer.router();
    for roles in [vec![], vec![Role::from("auditor")]] {
        let token = env.issuer.token(Uuid::now_v7(), &roles);
        let answer = get_me(&router, &token).await;
        answer.assert_problem(StatusCode::FORBIDDEN);
        let answer = put_address(&router, &token, berlin()).await;
        answer.assert_problem(StatusCode::FORBIDDEN);
        let answer = put_payment_method(&router, &token, visa()).await;
        answer.assert_problem(StatusCode::FORBIDDEN);
    }
    customer.shutdown().await;
}

async fn invalid_addresses_are_422_naming_every_field(backend: Backend) {
    let Some((env, customer)) = start(backend).await else {
        return;
    };
    let router = customer.router();
    let (_, token) = env.issuer.customer();
    let long = "x".repeat(201);
    let cases = [
        (
            json!({"line1": " ", "city": "Berlin", "postal_code": "10117", "country": "DE"}),
            vec!["line1"],
        ),
        (
            json!({"line1": long, "line2": long, "city": "Berlin", "postal_code": "10117",
            "country": "DE"}),
            vec!["line1", "line2"],
        ),
        (
            json!({"line1": "a", "city": "", "postal_code": "", "country": ""}),
            vec!["city", "postal_code", "country"],
        ),
        (
            json!({"line1": "a", "city": "x".repeat(101), "postal_code": "1".repeat(17),
            "country": "DE"}),
            vec!["city", "postal_code"],
        ),
        (
            json!({"line1": "a\u{0}b", "city": "B", "postal_code": "10117!", "country": "DE"}),
            vec!["line1", "postal_code"],
        ),
        (
            json!({"line1": "a", "city": "B", "postal_code": "1", "country": "XX"}),
            vec!["country"],
        ),
        (
            json!({"line1": "a", "city": "B", "postal_code": "1", "country": "DEU"}),
            vec!["country"],
        ),
        (
            json!({"line1": "a", "city": "B", "postal_code": "1", "country": "Ü1"}),
            vec!["country"],
        ),
    ];
    for (address, fields) in cases {
        let answer = put_address(&router, &token, address.clone()).await;
        assert_eq!(answer.invalid_fields(), fields, "{address}");
        assert_eq!(answer.body["type"], "urn:agora:problem:validation");
        // Nothing is echoed back.
        assert!(!answer.body.to_string().contains("xxxxxxxxxx"));
    }
    // Nothing was stored.
    assert_eq!(
        crate::support::get_me(&router, &token).await.body["version"],
        0
    );
    customer.shutdown().await;
}

async fn invalid_payment_methods_are_422_naming_every_field(backend: Backend) {
    let Some((env, customer)) = start(backend).await else {
        return;
    };
    let router = customer.router();
    let (_, token) = env.issuer.customer();
    let cases = [
        (json!({"token": "", "last4": "4242"}), vec!["token"]),
        (json!({"token": "visa", "last4": "4242"}), vec!["token"]),
        (json!({"token": "tok_", "last4": "4242"}), vec!["token"]),
        (json!({"token": "tok_VISA", "last4": "4242"}), vec!["token"]),
        (
            json!({"token": format!("tok_{}", "a".repeat(61)), "last4": "4242"}),
            vec!["token"],
        ),
        (
            json!({"token": "tok_4111111111111111", "last4": "1111"}),
            vec!["token"],
        ),
        (json!({"token": "tok_visa", "last4": "424"}), vec!["last4"]),
        (json!({"token": "tok_visa", "last4": "42a2"}), vec!["last4"]),
        (
            json!({"token": "card", "last4": "12345"}),
            vec!["token", "last4"],
        ),
    ];
    for (method, fields) in cases {
        let answer = put_payment_method(&router, &token, method.clone()).await;
        assert_eq!(answer.invalid_fields(), fields, "{method}");
        assert!(!answer.body.to_string().contains("4111111111111111"));
    }
    assert_eq!(
        crate::support::get_me(&router, &token).await.body["version"],
        0
    );
    customer.shutdown().await;
}

async fn bodies_of_the_wrong_shape_or_kind_are_refused(backend: Backend) {
    let Some((env, customer)) = start(backend).await else {
        return;
    };
    let router = customer.router();
    let (_, token) = env.issuer.customer();
    let authorization = format!("Bearer {token}");
    let auth = [("authorization", authorization.as_str())];
    let path = "/api/customers/me/address";

    // A required field missing, or of the wrong type: 422 naming it.
    let answer = put_address(
        &router,
        &token,
        json!({"line1": "a", "city": "B", "country": "DE"}),
    )
    .await;
    assert_eq!(answer.invalid_fields(), ["postal_code"]);
    let answer =
        put_payment_method(&router, &token, json!({"token": "tok_visa", "last4": 4242})).await;
    assert_eq!(answer.invalid_fields(), ["last4"]);
    // Not JSON: 400.
    let answer = send(
        &router,
        Method::PUT,
        path,
        &auth,
        Some(("application/json", b"{not json".to_vec())),
    )
    .await;
    answer.assert_problem(StatusCode::BAD_REQUEST);
    // Not declared as JSON: 415.
    let answer = send(
        &router,
        Method::PUT,
        path,
        &auth,
        Some(("text/plain", berlin().to_string().into_bytes())),
    )
    .await;
    answer.assert_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        crate::support::get_me(&router, &token).await.body["version"],
        0
    );
    customer.shutdown().await;
}

async fn bodies_over_64_kib_are_413(backend: Backend) {
    let Some((env, customer)) = start(backend).await else {
        return;
    };
    let router = customer.router();
    let (_, token) = env.issuer.customer();
    let authorization = format!("Bearer {token}");
    let mut address = berlin();
    address["line2"] = json!("x".repeat(64 * 1024));
    for path in [
        "/api/customers/me/address",
        "/api/customers/me/payment-method",
    ] {
        let answer = send(
            &router,
            Method::PUT,
            path,
            &[("authorization", authorization.as_str())],
            Some(("application/json", address.to_string().into_bytes())),
        )
        .await;
        answer.assert_problem(StatusCode::PAYLOAD_TOO_LARGE);
    }
    customer.shutdown().await;
}

async fn tokens_issued_before_a_password_change_are_refused(backend: Backend) {
    let Some((env, customer)) = start(backend).await else {
        return;
    };
    let router = customer.router();
    let (id, token) = env.issuer.customer();
    assert_eq!(get_me(&router, &token).await.status, StatusCode::OK);
    let changed = agora_contracts::PasswordChanged {
        user_id: id,
        changed_at: time::OffsetDateTime::now_utc() + time::Duration::seconds(1),
        version: 2,
    };
    let envelope =
        agora_messaging::Envelope::new(&changed, &agora_messaging::Context::new(id.to_string()))
            .unwrap();
    env.publish(&envelope).await;
    crate::support::eventually("the token is revoked", || async {
        get_me(&router, &token).await.status == StatusCode::UNAUTHORIZED
    })
    .await;
    get_me(&router, &token)
        .await
        .assert_problem(StatusCode::UNAUTHORIZED);
    customer.shutdown().await;
}

#[tokio::test]
async fn the_config_debug_shows_no_database_url() {
    let dir = tempfile::tempdir().unwrap();
    let bus = agora_bus::embedded::EmbeddedBus::open(dir.path().join("bus.db"))
        .await
        .unwrap();
    let config = agora_customer::CustomerConfig {
        db_url: "postgres://agora:s3cret@db.internal:5432/customer".into(),
        bus: std::sync::Arc::new(bus),
        keys: agora_auth::TestIssuer::new().keys(),
        internal: agora_auth::InternalKey::generate(),
    };
    let debug = format!("{config:?}");
    assert!(debug.contains("postgres"), "{debug}");
    assert!(
        !debug.contains("s3cret") && !debug.contains("db.internal"),
        "{debug}"
    );
}
