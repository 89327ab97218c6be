//! `GET /api/notifications/me`: every answer it gives.

use axum::http::StatusCode;
use uuid::Uuid;

use crate::support::{Backend, mailbox_answer, start};

crate::on_both_backends!(
    an_empty_mailbox_is_an_empty_list,
    it_needs_a_token_and_a_role,
    a_store_that_cannot_answer_is_a_503_to_retry,
);

/// Its store out of reach (a database restarting): 503 with `Retry-After`, not a 500.
async fn a_store_that_cannot_answer_is_a_503_to_retry(backend: Backend) {
    let Some((env, notification)) = start(backend).await else {
        return;
    };
    let (_, token) = env.issuer.customer();
    notification.db().pool().close().await;
    let answer = mailbox_answer(&notification.router(), Some(&token)).await;
    answer.assert_problem(StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        answer.headers.contains_key("retry-after"),
        "{:?}",
        answer.headers
    );
    notification.shutdown().await;
}

async fn an_empty_mailbox_is_an_empty_list(backend: Backend) {
    let Some((env, notification)) = start(backend).await else {
        return;
    };
    let (_, token) = env.issuer.customer();
    let answer = mailbox_answer(&notification.router(), Some(&token)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.content_type, "application/json");
    assert_eq!(answer.body, serde_json::json!([]));
    notification.shutdown().await;
}

async fn it_needs_a_token_and_a_role(backend: Backend) {
    let Some((env, notification)) = start(backend).await else {
        return;
    };
    let router = notification.router();
    mailbox_answer(&router, None)
        .await
        .assert_problem(StatusCode::UNAUTHORIZED);
    mailbox_answer(&router, Some("garbage"))
        .await
        .assert_problem(StatusCode::UNAUTHORIZED);
    let nobody = env.issuer.token(Uuid::now_v7(), &[]);
    mailbox_answer(&router, Some(&nobody))
        .await
        .assert_problem(StatusCode::FORBIDDEN);
    notification.shutdown().await;
}
