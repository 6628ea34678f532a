//! The job routes: each translates the request for [`crate::lifecycle::jobs`] and its answer back.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use http::{HeaderMap, StatusCode};
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::extract::{Admin, Body, Reader};
use super::refusals::{CancelRefused, DeleteRefused, Jobs};
use super::{ignored_fields, limit, ApiError, Message, Shared};
use crate::lifecycle::jobs;
use crate::model::job::{Job, Phase};
use crate::model::request::Validated;
use crate::model::request::{CreateJobRequest, CreateJobResponse};
use crate::model::Timestamp;
use crate::store::{self, Idempotency, JobQuery, JobStats};

type Answer<T> = Result<T, ApiError>;

/// Creates a job and starts the workflow that carries it out.
#[utoipa::path(
    post, path = "/dbroles/jobs", tag = "jobs",
    request_body = CreateJobRequest,
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "The same key and body within 24 h return the same job")),
    responses(
        (status = 202, description = "The job was created and its workflow started; unknown fields are named in X-Dbroles-Ignored-Fields", body = CreateJobResponse),
        (status = 400, description = "A field is invalid", body = Message),
        (status = 403, description = "The caller is not an admin, the organisation may not act on the instance's AWS account, or the database server belongs to another organisation", body = Message),
        (status = 404, description = "The instance or cluster does not exist", body = Message),
        (status = 409, description = "A job is already running on the database server (the instance or its cluster)", body = Message),
        (status = 413, description = "The body is too large", body = Message),
        (status = 422, description = "The Idempotency-Key was used with another body", body = Message),
        (status = 429, description = "The organisation has as many jobs running as the deployment allows one organisation (Retry-After says when to ask again)", body = Message),
        (status = 503, description = "The workflow could not be started; the job is failed", body = Message),
    ),
    security(("bearer" = []))
)]
pub(super) async fn create(
    State(app): State<Shared>,
    Admin(caller): Admin,
    headers: HeaderMap,
    Body(body): Body,
) -> Answer<(StatusCode, HeaderMap, Json<CreateJobResponse>)> {
    let create = CreateJobRequest::parse(&body)?;
    let idempotency = idempotency(&headers, &body)?;
    let job_id = jobs::start(&app, &caller.org, &caller.sub, create.value, idempotency).await?;
    Ok((StatusCode::ACCEPTED, ignored_fields(&create.ignored), Json(CreateJobResponse { job_id })))
}

fn idempotency(headers: &HeaderMap, body: &[u8]) -> Result<Option<Idempotency>, ApiError> {
    let Some(key) = headers.get("idempotency-key") else { return Ok(None) };
    let key = key
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| ApiError::bad_request("Idempotency-Key: must be 1 to 255 visible ASCII characters"))?;
    // The same JSON, however it is spaced or ordered, is the same body.
    let canonical = serde_json::from_slice::<serde_json::Value>(body).map(|v| v.to_string()).unwrap_or_default();
    Ok(Some(Idempotency {
        key: key.to_string(),
        body_hash: hex::encode(Sha256::digest(canonical.as_bytes())),
        expires_at: Timestamp(Timestamp::now().0 + chrono::Duration::hours(24)),
    }))
}

/// One job, exactly as seeds 000/001 show it.
#[utoipa::path(
    get, path = "/dbroles/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "The job", body = Job),
        (status = 403, description = "The caller is in no group that may read", body = Message),
        (status = 404, description = "No such job in the caller's organisation", body = Message),
    ),
    security(("bearer" = []))
)]
pub(super) async fn get(State(app): State<Shared>, Reader(caller): Reader, Path(id): Path<String>) -> Answer<Json<Job>> {
    Ok(Json(jobs::find(app.deps.jobs.as_ref(), &caller.org, &id).await?.job))
}

/// The most jobs one listing returns when the caller asks for no page: a client
/// that ignores `next_token` still sees every job of all but the busiest organisations.
pub const MAX_UNPAGED: usize = 1000;

/// The furthest page start: deeper pages are reached with `next_token`.
pub const MAX_START: usize = 10_000;

/// A listing of jobs: the page, where the next one starts, and how many match (seed 004's `total_count`).
#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    pub items: Vec<Job>,
    /// Pass it back for the next page; absent on the last.
    pub next_token: Option<String>,
    /// How many jobs match the filters, on every page.
    pub total_count: u64,
}

/// The organisation's jobs, newest first. With no paging parameter, every job (up
/// to 1,000, then `next_token`); `limit` with `next_token`, or `start` (seed 004's
/// `page.start`, from 1) with `limit`, for pages.
#[utoipa::path(
    get, path = "/dbroles/jobs", tag = "jobs",
    params(
        ("phase" = Option<Phase>, Query, description = "Only jobs in this phase"),
        ("db_arn" = Option<String>, Query, description = "Only jobs for this instance or cluster"),
        ("db_engine" = Option<String>, Query, description = "Only jobs for this engine"),
        ("fleet_job_id" = Option<String>, Query, description = "Only the jobs of this fleet job"),
        ("created_after" = Option<String>, Query, format = DateTime, description = "RFC 3339; only jobs created after"),
        ("created_before" = Option<String>, Query, format = DateTime, description = "RFC 3339; only jobs created before"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 100, description = "1 to 100; default 50 when paging, every job (up to 1,000) when not"),
        ("start" = Option<usize>, Query, minimum = 1, maximum = 10000, description = "The position of the page's first job, from 1 (seed 004's page.start); not with next_token"),
        ("next_token" = Option<String>, Query, description = "The previous page's next_token"),
    ),
    responses(
        (status = 200, description = "A page of jobs", body = JobList),
        (status = 400, description = "A filter or paging parameter is invalid", body = Message),
        (status = 403, description = "The caller is in no group that may read", body = Message),
    ),
    security(("bearer" = []))
)]
pub(super) async fn list(
    State(app): State<Shared>,
    Reader(caller): Reader,
    Query(params): Query<HashMap<String, String>>,
) -> Answer<Json<JobList>> {
    let time = |name: &str| {
        params
            .get(name)
            .map(|v| Timestamp::parse(v).ok_or_else(|| ApiError::bad_request(format!("{name}: expected an RFC 3339 time"))))
            .transpose()
    };
    let phase = params
        .get("phase")
        .map(|p| Phase::parse(p).ok_or_else(|| ApiError::bad_request("phase: expected running, failed or completed")))
        .transpose()?;
    let start = params
        .get("start")
        .map(|v| {
            let valid = v.parse::<usize>().ok().filter(|n| (1..=MAX_START).contains(n));
            valid.ok_or_else(|| ApiError::bad_request(format!("start: expected 1 to {MAX_START}")))
        })
        .transpose()?;
    let next_token = params.get("next_token").filter(|token| !token.is_empty()).cloned();
    if start.is_some() && next_token.is_some() {
        return Err(ApiError::bad_request("start, next_token: page by one or the other"));
    }
    let paging = start.is_some() || next_token.is_some() || params.contains_key("limit");
    // An empty next_token is none, as Go clients send an unset string.
    let query = JobQuery {
        phase,
        db_arn: params.get("db_arn").cloned(),
        db_engine: params.get("db_engine").cloned(),
        created_after: time("created_after")?,
        created_before: time("created_before")?,
        limit: if paging { limit(&params, 50)? } else { MAX_UNPAGED },
        next_token,
        skip: start.map_or(0, |start| start - 1),
        fleet_job_id: params.get("fleet_job_id").cloned(),
    };
    let counted = query.next_token.as_deref().map(|token| store::token_total(&caller.org, token)).transpose()?.flatten();
    let mut page = app.deps.jobs.list_jobs(&caller.org, &query).await?;
    // Counted once per listing: not when this page is all there is, nor on the pages after the first.
    let total_count = match (counted, &page.next_token) {
        (Some(total), _) => total,
        (None, None) if query.skip == 0 && query.next_token.is_none() => page.items.len() as u64,
        (None, _) => app.deps.jobs.count_jobs(&caller.org, &query).await?,
    };
    if let Some(token) = &page.next_token {
        page.next_token = Some(store::with_total(&caller.org, token, total_count)?);
    }
    Ok(Json(JobList { items: page.items, next_token: page.next_token, total_count }))
}

/// How many jobs the organisation has, by phase and by engine.
#[utoipa::path(
    get, path = "/dbroles/jobs/stats", tag = "jobs",
    responses(
        (status = 200, description = "The counts", body = JobStats),
        (status = 403, description = "The caller is in no group that may read", body = Message),
    ),
    security(("bearer" = []))
)]
pub(super) async fn stats(State(app): State<Shared>, Reader(caller): Reader) -> Answer<Json<JobStats>> {
    Ok(Json(app.deps.jobs.job_stats(&caller.org).await?))
}

/// Stops a running job: the job fails, naming who cancelled it, and its execution
/// is stopped. The database server stays locked until the execution has ended.
#[utoipa::path(
    post, path = "/dbroles/jobs/{id}/cancel", tag = "jobs",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "The cancelled job", body = Job),
        CancelRefused<Jobs>,
    ),
    security(("bearer" = []))
)]
pub(super) async fn cancel(State(app): State<Shared>, Admin(caller): Admin, Path(id): Path<String>) -> Answer<Json<Job>> {
    Ok(Json(jobs::cancel(&app, &caller.org, &id, &caller.sub).await?))
}

/// Forgets a finished job.
#[utoipa::path(
    delete, path = "/dbroles/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 204, description = "Deleted"),
        DeleteRefused<Jobs>,
    ),
    security(("bearer" = []))
)]
pub(super) async fn delete(State(app): State<Shared>, Admin(caller): Admin, Path(id): Path<String>) -> Answer<StatusCode> {
    jobs::delete(app.deps.jobs.as_ref(), &caller.org, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
