//! The HTTP API, one router for the API Lambda and the local server: a request in
//! (`http::Request<Bytes>` and the caller), a response out.
//!
//! | route | who | what |
//! | --- | --- | --- |
//! | `POST /dbroles/jobs` | admin | create a job (seed 002) |
//! | `GET /dbroles/jobs` | member | list, newest first, filtered and paged |
//! | `GET /dbroles/jobs/stats` | member | counts by phase and engine |
//! | `GET /dbroles/jobs/{id}` | member | one job (seeds 000/001) |
//! | `POST /dbroles/jobs/{id}/cancel` | admin | stop a running job |
//! | `DELETE /dbroles/jobs/{id}` | admin | forget a finished job |
//! | `POST`, `GET /resources`; `GET`, `PUT`, `DELETE /resources/{name}` | admin to write | resources (seed 003) |
//! | `GET /openapi.json` | member | the OpenAPI document of all of the above |

mod jobs;
pub use jobs::start_job;
pub mod openapi;
mod resources;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::{AuthError, Caller};
use crate::inventory::Inventory;
use crate::request::Invalid;
use crate::runner::Settings;
use crate::store::{JobStore, ResourceStore, StoreError};
use crate::workflow::Workflow;

/// Bodies larger than this are refused before parsing.
pub const MAX_BODY: usize = 64 * 1024;

/// What the router needs: the stores, the instances and the workflow.
pub struct App {
    pub jobs: Arc<dyn JobStore>,
    pub resources: Arc<dyn ResourceStore>,
    pub inventory: Arc<dyn Inventory>,
    pub workflow: Arc<dyn Workflow>,
    pub settings: Settings,
}

/// The body of every answer other than success.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Message {
    pub message: String,
}

/// An answer other than success: one status, one message.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }
}

impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> Self {
        Self::bad_request(invalid.0)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        let status = match &error {
            StoreError::Locked { .. } | StoreError::Conflict(_) | StoreError::Running => StatusCode::CONFLICT,
            StoreError::IdempotencyMismatch => StatusCode::UNPROCESSABLE_ENTITY,
            StoreError::NotFound => StatusCode::NOT_FOUND,
            StoreError::BadToken => StatusCode::BAD_REQUEST,
            StoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, error.to_string())
    }
}

type ApiResult = Result<Response<String>, ApiError>;

fn json<T: Serialize>(status: StatusCode, body: &T) -> ApiResult {
    let body = serde_json::to_string(body).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Response::builder().status(status).header("content-type", "application/json").body(body).expect("a valid response"))
}

fn no_content() -> ApiResult {
    Ok(Response::builder().status(StatusCode::NO_CONTENT).body(String::new()).expect("a valid response"))
}

fn error_response(error: ApiError) -> Response<String> {
    let body = serde_json::to_string(&Message { message: error.message }).expect("a message serialises");
    Response::builder().status(error.status).header("content-type", "application/json").body(body).expect("a valid response")
}

/// Handles one request for an authenticated (or not) caller.
pub async fn handle(app: &App, caller: Result<Caller, AuthError>, request: Request<Bytes>) -> Response<String> {
    route(app, caller, request).await.unwrap_or_else(error_response)
}

async fn route(app: &App, caller: Result<Caller, AuthError>, request: Request<Bytes>) -> ApiResult {
    let path = request.uri().path().trim_end_matches('/').to_string();
    let segments: Vec<String> = path.split('/').skip(1).map(percent_decode).collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let known = matches!(
        segments.as_slice(),
        ["dbroles", "jobs"]
            | ["dbroles", "jobs", _]
            | ["dbroles", "jobs", _, "cancel"]
            | ["resources"]
            | ["resources", _]
            | ["openapi.json"]
    );
    if !known {
        return Err(ApiError::not_found(format!("no route for {path}")));
    }
    let caller = caller.map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()))?;
    let method = request.method().clone();
    if method != Method::GET && !caller.is_admin() {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "this operation needs the admin group"));
    }
    let query = query_pairs(request.uri().query().unwrap_or_default());
    let body = request.body();
    if body.len() > MAX_BODY {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the request body is larger than {MAX_BODY} bytes")));
    }
    match (&method, segments.as_slice()) {
        (&Method::POST, ["dbroles", "jobs"]) => jobs::create(app, &caller, &request).await,
        (&Method::GET, ["dbroles", "jobs"]) => jobs::list(app, &caller, &query).await,
        (&Method::GET, ["dbroles", "jobs", "stats"]) => jobs::stats(app, &caller).await,
        (&Method::GET, ["dbroles", "jobs", id]) => jobs::get(app, &caller, id).await,
        (&Method::DELETE, ["dbroles", "jobs", id]) => jobs::delete(app, &caller, id).await,
        (&Method::POST, ["dbroles", "jobs", id, "cancel"]) => jobs::cancel(app, &caller, id).await,
        (&Method::POST, ["resources"]) => resources::create(app, &caller, body).await,
        (&Method::GET, ["resources"]) => resources::list(app, &caller, &query).await,
        (&Method::GET, ["resources", name]) => resources::get(app, &caller, name).await,
        (&Method::PUT, ["resources", name]) => resources::put(app, &caller, name, body).await,
        (&Method::DELETE, ["resources", name]) => resources::delete(app, &caller, name).await,
        (&Method::GET, ["openapi.json"]) => json(StatusCode::OK, &openapi::document()),
        (method, _) => Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {path}"))),
    }
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

/// `a=b&c=d%20e` → pairs, percent- and plus-decoded.
fn query_pairs(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(&k.replace('+', " ")), percent_decode(&v.replace('+', " ")))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode() {
        let pairs = query_pairs("phase=running&db_arn=arn%3Aaws%3Ards&x=a+b&bad=%zz&trail=%4");
        assert_eq!(pairs["phase"], "running");
        assert_eq!(pairs["db_arn"], "arn:aws:rds");
        assert_eq!(pairs["x"], "a b");
        assert_eq!(pairs["bad"], "%zz");
        assert_eq!(pairs["trail"], "%4");
    }
}
