//! The HTTP API, one router for the API Lambda and the local server: a request in
//! (`http::Request<Bytes>` and the caller), a response out.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::auth::{AuthError, Caller};
use crate::engine;
use crate::inventory::Inventory;
use crate::job::{Phase, Timestamp};
use crate::request::{CreateJobRequest, CreateJobResponse, Invalid};
use crate::runner::{self, Settings};
use crate::store::{Created, Idempotency, JobQuery, JobStore, NewJob, StoreError};
use crate::workflow::Workflow;

/// Bodies larger than this are refused before parsing.
pub const MAX_BODY: usize = 64 * 1024;

pub struct App {
    pub jobs: Arc<dyn JobStore>,
    pub inventory: Arc<dyn Inventory>,
    pub workflow: Arc<dyn Workflow>,
    pub settings: Settings,
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
}

impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> Self {
        Self::new(StatusCode::BAD_REQUEST, invalid.0)
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

fn error_response(error: ApiError) -> Response<String> {
    let body = serde_json::json!({ "message": error.message }).to_string();
    Response::builder().status(error.status).header("content-type", "application/json").body(body).expect("a valid response")
}

/// Handles one request for an authenticated (or not) caller.
pub async fn handle(app: &App, caller: Result<Caller, AuthError>, request: Request<Bytes>) -> Response<String> {
    route(app, caller, request).await.unwrap_or_else(error_response)
}

async fn route(app: &App, caller: Result<Caller, AuthError>, request: Request<Bytes>) -> ApiResult {
    let path = request.uri().path().trim_end_matches('/').to_string();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let known = matches!(segments.as_slice(), ["dbroles", "jobs"] | ["dbroles", "jobs", _]);
    if !known {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no route for {path}")));
    }
    let caller = caller.map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()))?;
    let method = request.method().clone();
    if method != Method::GET && !caller.is_admin() {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "this operation needs the admin group"));
    }
    match (method, segments.as_slice()) {
        (Method::POST, ["dbroles", "jobs"]) => create_job(app, &caller, &request).await,
        (Method::GET, ["dbroles", "jobs"]) => list_jobs(app, &caller, request.uri().query().unwrap_or_default()).await,
        (Method::GET, ["dbroles", "jobs", id]) => get_job(app, &caller, id).await,
        (method, _) => Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {path}"))),
    }
}

async fn create_job(app: &App, caller: &Caller, request: &Request<Bytes>) -> ApiResult {
    let body = request.body();
    if body.len() > MAX_BODY {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the request body is larger than {MAX_BODY} bytes")));
    }
    let create = CreateJobRequest::parse(body)?;
    let arn = create.instance_arn();
    let instance =
        app.inventory.describe(&arn).await.map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()))?.ok_or_else(
            || ApiError::new(StatusCode::BAD_REQUEST, format!("aws.instance_arn: no instance or cluster {arn} was found")),
        )?;
    engine::validate_prefix(&app.settings.role_prefix, &instance.engine)?;
    let idempotency = idempotency(request, body)?;
    let mut record = runner::new_record(&caller.org, &caller.sub, create, runner::spec_of(&instance, &arn.account));
    match app.jobs.create_job(NewJob { record: record.clone(), idempotency }).await? {
        Created::Replayed(job_id) => return json(StatusCode::ACCEPTED, &CreateJobResponse { job_id }),
        Created::New => {}
    }
    match app.workflow.start(&record).await {
        Ok(execution) => {
            record.execution = Some(execution);
            // A quick job may have finished already; then there is nothing to record.
            app.jobs.update_job(&record).await?;
            json(StatusCode::ACCEPTED, &CreateJobResponse { job_id: record.job.id })
        }
        Err(reason) => {
            record.finish(Phase::Failed, format!("the workflow could not be started: {reason}"));
            app.jobs.finish_job(&record, Timestamp(record.job.created_at.0 + app.settings.retention)).await?;
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("job {} failed: the workflow could not be started: {reason}", record.job.id),
            ))
        }
    }
}

fn idempotency(request: &Request<Bytes>, body: &[u8]) -> Result<Option<Idempotency>, ApiError> {
    let Some(key) = request.headers().get("idempotency-key") else { return Ok(None) };
    let key =
        key.to_str().ok().filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic())).ok_or_else(
            || ApiError::new(StatusCode::BAD_REQUEST, "Idempotency-Key: must be 1 to 255 visible ASCII characters"),
        )?;
    // The same JSON, however it is spaced or ordered, is the same body.
    let canonical = serde_json::from_slice::<serde_json::Value>(body).map(|v| v.to_string()).unwrap_or_default();
    Ok(Some(Idempotency {
        key: key.to_string(),
        body_hash: hex::encode(Sha256::digest(canonical.as_bytes())),
        expires_at: Timestamp(Timestamp::now().0 + chrono::Duration::hours(24)),
    }))
}

async fn get_job(app: &App, caller: &Caller, id: &str) -> ApiResult {
    let record =
        app.jobs.get_job(&caller.org, id).await?.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no job {id}")))?;
    json(StatusCode::OK, &record.job)
}

async fn list_jobs(app: &App, caller: &Caller, query: &str) -> ApiResult {
    let params: HashMap<String, String> = url_decode_pairs(query);
    let time = |name: &str| {
        params
            .get(name)
            .map(|v| {
                Timestamp::parse(v)
                    .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, format!("{name}: expected an RFC 3339 time")))
            })
            .transpose()
    };
    let limit = match params.get("limit") {
        None => 50,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "limit: expected 1 to 100"))?,
    };
    let phase = params
        .get("phase")
        .map(|p| {
            Phase::parse(p).ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "phase: expected running, failed or completed"))
        })
        .transpose()?;
    let query = JobQuery {
        phase,
        db_arn: params.get("db_arn").cloned(),
        db_engine: params.get("db_engine").cloned(),
        created_after: time("created_after")?,
        created_before: time("created_before")?,
        limit,
        next_token: params.get("next_token").cloned(),
    };
    json(StatusCode::OK, &app.jobs.list_jobs(&caller.org, &query).await?)
}

/// `a=b&c=d%20e` → pairs, percent- and plus-decoded.
fn url_decode_pairs(query: &str) -> HashMap<String, String> {
    fn decode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    match std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        Some(b) => {
                            out.push(b);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}
