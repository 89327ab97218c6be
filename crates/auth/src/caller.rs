//! The axum extractor that turns a bearer token into a [`Caller`].

use agora_contracts::Role;
use axum::extract::{FromRef, FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use uuid::Uuid;

use crate::{Error, Verifier};

/// Who is calling: the user of a verified, unrevoked token.
///
/// Extract it in a handler of a router whose state provides a [`Verifier`] (through
/// [`FromRef`]); a request without a valid token is answered 401 problem+json before
/// the handler runs. `Option<Caller>` is `None` without an `Authorization` header, and
/// still refuses a bad token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: Uuid,
    pub roles: Vec<Role>,
}

impl Caller {
    pub fn has_role(&self, role: &Role) -> bool {
        self.roles.contains(role)
    }

    /// `Ok` if the caller has `role`; otherwise [`Error::Forbidden`], a 403. Roles are
    /// not ranked: an admin-only route requires [`Role::Admin`], a customer route
    /// whatever it names.
    pub fn require(&self, role: Role) -> Result<(), Error> {
        if self.has_role(&role) {
            Ok(())
        } else {
            Err(Error::Forbidden(role))
        }
    }
}

impl<S> FromRequestParts<S> for Caller
where
    Verifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token = bearer_token(&parts.headers)?;
        caller(&Verifier::from_ref(state), token).await
    }
}

impl<S> OptionalFromRequestParts<S> for Caller
where
    Verifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        match bearer_token(&parts.headers) {
            Err(Error::MissingToken) if !parts.headers.contains_key(header::AUTHORIZATION) => {
                Ok(None)
            }
            Err(error) => Err(error),
            Ok(token) => caller(&Verifier::from_ref(state), token).await.map(Some),
        }
    }
}

async fn caller(verifier: &Verifier, token: &str) -> Result<Caller, Error> {
    match verifier.verify(token).await {
        Ok(claims) => Ok(Caller {
            user_id: claims.sub,
            roles: claims.roles,
        }),
        Err(error) => {
            // The reason only: never the token.
            tracing::debug!(%error, "bearer token refused");
            Err(error)
        }
    }
}

/// The token of the one `Authorization: Bearer <token>` header.
fn bearer_token(headers: &HeaderMap) -> Result<&str, Error> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next().ok_or(Error::MissingToken)?;
    if values.next().is_some() {
        return Err(Error::MissingToken);
    }
    let value = value.to_str().map_err(|_| Error::MissingToken)?;
    let (scheme, token) = value.split_once(' ').ok_or(Error::MissingToken)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
        return Err(Error::MissingToken);
    }
    Ok(token)
}
