//! The HTTP API of notification: the caller's mailbox, its OpenAPI document, and the
//! one table that maps errors to problems.

use agora_auth::{Caller, Verifier};
use agora_contracts::Role;
use agora_httpkit::{BearerSecurity, Json, Problem, responses};
use agora_messaging::Db;
use axum::Router;
use axum::extract::{FromRef, State as AxumState};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::store::{self, Message};

/// The most messages the mailbox answers with (the newest).
const MAILBOX_LIMIT: i64 = 200;

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct State {
    pub db: Db,
    pub verifier: Verifier,
}

impl FromRef<State> for Verifier {
    fn from_ref(state: &State) -> Verifier {
        state.verifier.clone()
    }
}

pub fn router(state: State) -> Router {
    Router::new()
        .route("/api/notifications/me", get(my_messages))
        .with_state(state)
}

/// Why a request failed. [`ApiError::problem`] is the one place these become answers.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("not authenticated: {0}")]
    Unauthenticated(agora_auth::Error),
    #[error("not a customer")]
    Forbidden,
    #[error(transparent)]
    Internal(#[from] crate::Error),
}

impl ApiError {
    fn problem(&self) -> Problem {
        match self {
            ApiError::Unauthenticated(error) => error.into(),
            ApiError::Forbidden => {
                Problem::forbidden().with_detail("This needs the customer or the admin role.")
            }
            ApiError::Internal(error) => agora_service::internal_problem("notification", error),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.problem().into_response()
    }
}

/// A message sent to the customer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = NotificationMessage)]
pub struct MessageBody {
    id: Uuid,
    /// `order_confirmation`, `order_cancelled` or `order_shipped`.
    #[schema(example = "order_confirmation")]
    kind: String,
    subject: String,
    body: String,
    /// The order the message is about, when it is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    order_id: Option<Uuid>,
    /// That order's reference, as people quote it (`AG-7K3Q-9D2M`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "AG-7K3Q-9D2M")]
    order_reference: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    sent_at: OffsetDateTime,
}

impl From<Message> for MessageBody {
    fn from(message: Message) -> Self {
        MessageBody {
            id: message.id,
            kind: message.kind,
            subject: message.subject,
            body: message.body,
            order_id: message.order_id,
            order_reference: message
                .order_id
                .map(|id| agora_contracts::OrderReference::of(id).to_string()),
            sent_at: message.sent_at,
        }
    }
}

/// The caller's messages, newest first (at most 200).
#[utoipa::path(
    get,
    path = "/api/notifications/me",
    tag = "notification",
    operation_id = "notification_list_mine",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's messages, newest first.",
            body = [MessageBody]),
        (status = 403, description = "Neither the customer nor the admin role.",
            body = Problem, content_type = "application/problem+json"),
        responses::NoValidToken, responses::InternalError,
    )
)]
async fn my_messages(
    AxumState(state): AxumState<State>,
    caller: Result<Caller, agora_auth::Error>,
) -> Result<Json<Vec<MessageBody>>, ApiError> {
    let caller = caller.map_err(ApiError::Unauthenticated)?;
    if !caller.has_role(&Role::Customer) && !caller.has_role(&Role::Admin) {
        return Err(ApiError::Forbidden);
    }
    let messages = store::mailbox(&state.db, caller.user_id, MAILBOX_LIMIT).await?;
    Ok(Json(messages.into_iter().map(MessageBody::from).collect()))
}

/// The OpenAPI document of the public paths.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Agora notification", description = "The customer's mailbox."),
    paths(my_messages),
    components(schemas(MessageBody, Problem)),
    modifiers(&BearerSecurity),
    tags((name = "notification", description = "Messages sent to customers."))
)]
pub struct ApiDoc;
