//! What handlers take from a request besides path and query: the caller (401
//! without one), a reader or an admin as the deployment's [`GroupPolicy`] says
//! (403 for anyone else), and the raw body within the limit (413).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use http::request::Parts;
use http::StatusCode;

use super::{ApiError, Shared, MAX_BODY};
use crate::auth::{AuthError, Caller, GroupPolicy};

/// The caller of a request, as the layer in front of the router established it.
#[derive(Clone, Debug)]
pub struct Authenticated(pub Result<Caller, AuthError>);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let unauthorized = |error: &AuthError| ApiError::new(StatusCode::UNAUTHORIZED, error.to_string());
        match parts.extensions.get::<Authenticated>() {
            Some(Authenticated(Ok(caller))) => Ok(caller.clone()),
            Some(Authenticated(Err(error))) => Err(unauthorized(error)),
            None => Err(unauthorized(&AuthError::Missing)),
        }
    }
}

/// A caller in the admin group: the only ones who may write.
pub struct Admin(pub Caller);

/// A caller who may read: the admin group or a reader group.
pub struct Reader(pub Caller);

/// The caller, if `allowed` by the deployment's group policy; else 403 naming what is needed.
async fn member(
    parts: &mut Parts,
    app: &Shared,
    allowed: fn(&GroupPolicy, &Caller) -> bool,
    needs: impl FnOnce(&GroupPolicy) -> String,
) -> Result<Caller, ApiError> {
    let caller = Caller::from_request_parts(parts, app).await?;
    let policy = &app.deps.settings.groups;
    match allowed(policy, &caller) {
        true => Ok(caller),
        false => Err(ApiError::new(StatusCode::FORBIDDEN, needs(policy))),
    }
}

impl FromRequestParts<Shared> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Self, ApiError> {
        let needs = |policy: &GroupPolicy| format!("this operation needs the {} group", policy.admin);
        member(parts, app, GroupPolicy::is_admin, needs).await.map(Admin)
    }
}

impl FromRequestParts<Shared> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Self, ApiError> {
        let needs = |policy: &GroupPolicy| format!("reading needs one of the groups {}", policy.readers.join(", "));
        member(parts, app, GroupPolicy::may_read, needs).await.map(Reader)
    }
}

/// The request body, refused with a JSON 413 past [`MAX_BODY`].
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(request, state).await.map(Body).map_err(|rejection| match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the request body is larger than {MAX_BODY} bytes"))
            }
            status => ApiError::new(status, rejection.body_text()),
        })
    }
}
