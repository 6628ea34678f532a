//! The fleet-job routes: each translates the request for [`crate::lifecycle::fleet`] and its answer back.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use http::{HeaderMap, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::{Admin, Body, Reader};
use super::refusals::{CancelRefused, DeleteRefused, FleetJobs};
use super::{ignored_fields, limit, ApiError, Message, Shared};
use crate::lifecycle::fleet;
use crate::model::fleet::{CreateFleetJobRequest, CreateFleetJobResponse, FleetJob};
use crate::model::job::Job;
use crate::model::request::Validated;

type Answer<T> = Result<T, ApiError>;

/// Creates a fleet job and starts its execution: one job per instance the selector matches.
#[utoipa::path(
    post, path = "/dbroles/fleet-jobs", tag = "fleet-jobs",
    request_body = CreateFleetJobRequest,
    responses(
        (status = 202, description = "The fleet job was created and its execution started; unknown fields are named in X-Dbroles-Ignored-Fields", body = CreateFleetJobResponse),
        (status = 400, description = "A field is invalid", body = Message),
        (status = 403, description = "The caller is not an admin, or the organisation may not act on an account the selector names", body = Message),
        (status = 413, description = "The body is too large", body = Message),
        (status = 429, description = "The organisation's running jobs and the fleet's max_concurrency exceed its share (Retry-After says when to ask again)", body = Message),
        (status = 503, description = "The execution could not be started; the fleet job is failed", body = Message),
    ),
    security(("bearer" = []))
)]
pub(super) async fn create(
    State(app): State<Shared>,
    Admin(caller): Admin,
    Body(body): Body,
) -> Answer<(StatusCode, HeaderMap, Json<CreateFleetJobResponse>)> {
    let create = CreateFleetJobRequest::parse(&body)?;
    let fleet_job_id = fleet::start(&app, &caller.org, &caller.sub, create.value).await?;
    Ok((StatusCode::ACCEPTED, ignored_fields(&create.ignored), Json(CreateFleetJobResponse { fleet_job_id })))
}

/// A fleet job with a page of its jobs.
#[derive(Debug, Serialize, ToSchema)]
pub struct FleetJobView {
    #[serde(flatten)]
    pub fleet: FleetJob,
    /// A page of the fleet job's jobs, newest first: each as `GET /dbroles/jobs/{id}` returns it.
    pub jobs: Vec<Job>,
    /// Pass it back as `next_token` for the next page of jobs; absent on the last.
    pub next_token: Option<String>,
}

/// One fleet job: its selector and options, its counts by phase, and a page of its jobs.
#[utoipa::path(
    get, path = "/dbroles/fleet-jobs/{id}", tag = "fleet-jobs",
    params(
        ("id" = String, Path, description = "The fleet job id"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 100, description = "Jobs per page: 1 to 100, default 50"),
        ("next_token" = Option<String>, Query, description = "The previous page's next_token"),
    ),
    responses(
        (status = 200, description = "The fleet job", body = FleetJobView),
        (status = 400, description = "A paging parameter is invalid", body = Message),
        (status = 403, description = "The caller is in no group that may read", body = Message),
        (status = 404, description = "No such fleet job in the caller's organisation", body = Message),
    ),
    security(("bearer" = []))
)]
pub(super) async fn get(
    State(app): State<Shared>,
    Reader(caller): Reader,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Answer<Json<FleetJobView>> {
    let fleet = fleet::find(app.deps.fleets.as_ref(), app.deps.jobs.as_ref(), &caller.org, &id).await?;
    let next_token = params.get("next_token").filter(|token| !token.is_empty()).cloned();
    let page = fleet::children(app.deps.jobs.as_ref(), &caller.org, &id, limit(&params, 50)?, next_token).await?;
    Ok(Json(FleetJobView { fleet, jobs: page.items, next_token: page.next_token }))
}

/// A page of fleet jobs.
#[derive(Debug, Serialize, ToSchema)]
pub struct FleetJobList {
    pub items: Vec<FleetJob>,
    /// Pass it back for the next page; absent on the last.
    pub next_token: Option<String>,
}

/// The organisation's fleet jobs, newest first.
#[utoipa::path(
    get, path = "/dbroles/fleet-jobs", tag = "fleet-jobs",
    params(
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 50"),
        ("next_token" = Option<String>, Query, description = "The previous page's next_token"),
    ),
    responses(
        (status = 200, description = "A page of fleet jobs", body = FleetJobList),
        (status = 400, description = "A paging parameter is invalid", body = Message),
        (status = 403, description = "The caller is in no group that may read", body = Message),
    ),
    security(("bearer" = []))
)]
pub(super) async fn list(
    State(app): State<Shared>,
    Reader(caller): Reader,
    Query(params): Query<HashMap<String, String>>,
) -> Answer<Json<FleetJobList>> {
    let next_token = params.get("next_token").filter(|token| !token.is_empty()).map(String::as_str);
    let page =
        fleet::list(app.deps.fleets.as_ref(), app.deps.jobs.as_ref(), &caller.org, limit(&params, 50)?, next_token).await?;
    Ok(Json(FleetJobList { items: page.items, next_token: page.next_token }))
}

/// Stops a running fleet job: no further job starts, its execution is stopped,
/// and each of its jobs still running is cancelled.
#[utoipa::path(
    post, path = "/dbroles/fleet-jobs/{id}/cancel", tag = "fleet-jobs",
    params(("id" = String, Path, description = "The fleet job id")),
    responses(
        (status = 200, description = "The cancelled fleet job", body = FleetJob),
        CancelRefused<FleetJobs>,
    ),
    security(("bearer" = []))
)]
pub(super) async fn cancel(State(app): State<Shared>, Admin(caller): Admin, Path(id): Path<String>) -> Answer<Json<FleetJob>> {
    Ok(Json(fleet::cancel(&app, &caller.org, &id, &caller.sub).await?))
}

/// Forgets a finished fleet job; its jobs stay, each deleted on its own.
#[utoipa::path(
    delete, path = "/dbroles/fleet-jobs/{id}", tag = "fleet-jobs",
    params(("id" = String, Path, description = "The fleet job id")),
    responses(
        (status = 204, description = "Deleted"),
        DeleteRefused<FleetJobs>,
    ),
    security(("bearer" = []))
)]
pub(super) async fn delete(State(app): State<Shared>, Admin(caller): Admin, Path(id): Path<String>) -> Answer<StatusCode> {
    fleet::delete(app.deps.fleets.as_ref(), &caller.org, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
