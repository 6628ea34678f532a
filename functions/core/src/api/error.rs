//! The API's one error answer, `{"message": ...}` with one status, and how each
//! error of the domain maps to it.

use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::lifecycle::accounts::AccountError;
use crate::lifecycle::fleet::FleetError;
use crate::lifecycle::jobs::JobError;
use crate::model::request::Invalid;
use crate::store::StoreError;

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
    /// Seconds to wait before asking again (`Retry-After`), for a 429.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), retry_after: None }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(super) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(Message { message: self.message })).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
        }
        response
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

impl From<AccountError> for ApiError {
    fn from(error: AccountError) -> Self {
        let status = match &error {
            AccountError::Store(store) => return store.clone().into(),
            AccountError::NotRegistered { .. }
            | AccountError::HomeAccount { .. }
            | AccountError::Unproven { .. }
            | AccountError::Untrusting { .. }
            | AccountError::OwnedByAnother { .. }
            | AccountError::Untagged { .. }
            | AccountError::RoleRefused(_) => StatusCode::FORBIDDEN,
            AccountError::AccountTaken { .. } => StatusCode::CONFLICT,
            AccountError::NotFound(_) => StatusCode::NOT_FOUND,
            AccountError::Invalid(_) => StatusCode::BAD_REQUEST,
            AccountError::Inventory(_) => StatusCode::BAD_GATEWAY,
        };
        Self::new(status, error.to_string())
    }
}

impl From<FleetError> for ApiError {
    fn from(error: FleetError) -> Self {
        let status = match &error {
            FleetError::Store(store) => return store.clone().into(),
            FleetError::Account(account) => return account.clone().into(),
            FleetError::Job(job) => return job.clone().into(),
            FleetError::NotFound(_) => StatusCode::NOT_FOUND,
            FleetError::Finished(_) | FleetError::Running(_) => StatusCode::CONFLICT,
            FleetError::Invalid(_) | FleetError::TooMany(_) => StatusCode::BAD_REQUEST,
            FleetError::Inventory(_) => StatusCode::BAD_GATEWAY,
            FleetError::NotStarted { .. } | FleetError::Unknown { .. } => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, error.to_string())
    }
}

impl From<JobError> for ApiError {
    fn from(error: JobError) -> Self {
        let status = match &error {
            JobError::Store(store) => return store.clone().into(),
            JobError::Account(account) => return account.clone().into(),
            JobError::Busy { .. } => StatusCode::CONFLICT,
            JobError::NotFound(_) => StatusCode::NOT_FOUND,
            JobError::Finished(_) | JobError::Running(_) => StatusCode::CONFLICT,
            JobError::UnknownInstance(_) | JobError::Replaced(_) => StatusCode::NOT_FOUND,
            JobError::Invalid(_) => StatusCode::BAD_REQUEST,
            JobError::Inventory(_) => StatusCode::BAD_GATEWAY,
            JobError::NotStarted { .. } => StatusCode::SERVICE_UNAVAILABLE,
            JobError::OverShare { .. } => {
                return Self {
                    retry_after: Some(crate::lifecycle::jobs::RETRY_AFTER_SECS),
                    ..Self::new(StatusCode::TOO_MANY_REQUESTS, error.to_string())
                }
            }
        };
        Self::new(status, error.to_string())
    }
}
