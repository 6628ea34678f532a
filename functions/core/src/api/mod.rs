//! The HTTP API: one axum router for the API Lambda (`lambda_http::run`) and the
//! local server (`axum::serve`). The route table exists once, in [`routes`]; the
//! OpenAPI document is generated from the same handlers.
//!
//! | route | who | what |
//! | --- | --- | --- |
//! | `POST /dbroles/jobs` | admin | create a job (seed 002) |
//! | `GET /dbroles/jobs` | reader | list, newest first, filtered and paged |
//! | `GET /dbroles/jobs/stats` | reader | counts by phase and engine |
//! | `GET /dbroles/jobs/{id}` | reader | one job (seeds 000/001) |
//! | `POST /dbroles/jobs/{id}/cancel` | admin | stop a running job |
//! | `DELETE /dbroles/jobs/{id}` | admin | forget a finished job |
//! | `POST`, `GET /dbroles/fleet-jobs`; `GET`, `DELETE /dbroles/fleet-jobs/{id}`; `POST .../{id}/cancel` | admin to write, reader to read | fleet jobs: one request over every instance a selector picks |
//! | `POST`, `GET /resources`; `GET`, `PUT`, `DELETE /resources/{name}` | admin to write | resources (seed 003) |
//! | `PUT`, `GET`, `DELETE /dbroles/accounts/{account_id}`; `GET /dbroles/accounts` | admin to write, reader to read | the AWS accounts the organisation acts on |
//! | `GET /openapi.json`, `/openapiv3.json` | anyone | the OpenAPI document of all of the above |
//!
//! Every route is also served under `/api` (`/api/dbroles/jobs`), where hoop.dev's
//! clients call it.
//!
//! Who calls is established in front of the router ([`authenticated`]): from the
//! JWT authorizer's claims on Lambda, from the local token locally. Who may write
//! (the admin group) and read (the reader groups: admin and auditor by default) is
//! the deployment's [`crate::auth::GroupPolicy`].

mod accounts;
mod error;
mod extract;
mod fleets;
mod jobs;
pub mod openapi;
mod refusals;
mod resources;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::routing::get;
use axum::{Json, Router};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use accounts::AccountList;
pub use error::{ApiError, Message};
pub use extract::{Admin, Authenticated, Reader};

use crate::auth::{AuthError, Caller};
use crate::deps::App;

/// Bodies larger than this are refused before parsing.
pub const MAX_BODY: usize = 64 * 1024;

/// What every handler's `State` holds.
type Shared = Arc<App>;

/// The routes and their OpenAPI description, from the handlers' annotations.
fn routes() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(jobs::create, jobs::list))
        .routes(routes!(jobs::stats))
        .routes(routes!(jobs::get, jobs::delete))
        .routes(routes!(jobs::cancel))
        .routes(routes!(fleets::create, fleets::list))
        .routes(routes!(fleets::get, fleets::delete))
        .routes(routes!(fleets::cancel))
        .routes(routes!(resources::create, resources::list))
        .routes(routes!(resources::get, resources::put, resources::delete))
        .routes(routes!(accounts::list))
        .routes(routes!(accounts::put, accounts::get, accounts::delete))
}

/// The API on `app`, at the root and under `/api`. Put [`authenticated`] in
/// front of it, or every route but the OpenAPI document answers 401.
pub fn router(app: Arc<App>) -> Router {
    let (router, _) = routes().split_for_parts();
    let document = Json(document());
    let routes = router
        .route("/openapi.json", get(document.clone()))
        .route("/openapiv3.json", get(document))
        .method_not_allowed_fallback(|request: Request| async move {
            let message = format!("{} is not allowed on {}", request.method(), request.uri().path());
            ApiError::new(http::StatusCode::METHOD_NOT_ALLOWED, message)
        })
        .with_state(app);
    Router::new()
        .nest("/api", routes.clone())
        .merge(routes)
        .fallback(|request: Request| async move { ApiError::not_found(format!("no route for {}", request.uri().path())) })
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// The router with the caller of each request established by `authenticate`.
pub fn authenticated<F>(router: Router, authenticate: F) -> Router
where
    F: Fn(&http::request::Parts) -> Result<Caller, AuthError> + Clone + Send + Sync + 'static,
{
    router.layer(axum::middleware::map_request(move |request: Request| {
        let authenticate = authenticate.clone();
        async move {
            let (mut parts, body) = request.into_parts();
            let caller = authenticate(&parts);
            parts.extensions.insert(Authenticated(caller));
            Request::from_parts(parts, body)
        }
    }))
}

/// The OpenAPI 3 document of every route.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut document = routes().split_for_parts().1;
    openapi::document_unauthorized(&mut document);
    document
}

/// The header naming the request's fields that dbroles ignored (unknown to it).
pub const IGNORED_FIELDS: &str = "x-dbroles-ignored-fields";

/// [`IGNORED_FIELDS`] for `fields`, if there are any.
fn ignored_fields(fields: &[String]) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    if let Ok(value) = http::HeaderValue::from_str(&fields.join(", ")) {
        if !fields.is_empty() {
            headers.insert(IGNORED_FIELDS, value);
        }
    }
    headers
}

/// `limit`: `default` when absent, else 1 to 100.
fn limit(query: &HashMap<String, String>, default: usize) -> Result<usize, ApiError> {
    match query.get("limit") {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| ApiError::bad_request("limit: expected 1 to 100")),
    }
}
