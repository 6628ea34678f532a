//! The job routes.

use std::collections::HashMap;

use bytes::Bytes;
use http::{Request, StatusCode};
use sha2::{Digest, Sha256};

use super::{json, limit, no_content, ApiError, ApiResult, App, Message};
use crate::auth::Caller;
use crate::engine;
use crate::job::{Job, JobRecord, Phase, Timestamp};
use crate::request::{CreateJobRequest, CreateJobResponse};
use crate::runner;
use crate::store::{Created, Idempotency, JobQuery, JobStats, NewJob, Page};

/// Creates a job and starts the workflow that carries it out.
#[utoipa::path(
    post, path = "/dbroles/jobs", tag = "jobs",
    request_body = CreateJobRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "The same key and body within 24 h return the same job")),
    responses(
        (status = 202, description = "The job was created and its workflow started", body = CreateJobResponse),
        (status = 400, description = "A field is invalid, or the instance does not exist", body = Message),
        (status = 409, description = "A job is already running for the instance", body = Message),
        (status = 413, description = "The body is too large", body = Message),
        (status = 422, description = "The Idempotency-Key was used with another body", body = Message),
        (status = 503, description = "The workflow could not be started; the job is failed", body = Message),
    ),
    security(("bearer" = []))
)]
pub(super) async fn create(app: &App, caller: &Caller, request: &Request<Bytes>) -> ApiResult {
    let body = request.body();
    let create = CreateJobRequest::parse(body)?;
    let idempotency = idempotency(request, body)?;
    let job_id = start_job(app, &caller.org, &caller.sub, create, idempotency).await?;
    json(StatusCode::ACCEPTED, &CreateJobResponse { job_id })
}

/// Stores a validated request as a running job and starts its workflow: the job's
/// id. If the workflow cannot start, the job is failed with the reason (5xx).
pub async fn start_job(
    app: &App,
    org: &str,
    created_by: &str,
    create: CreateJobRequest,
    idempotency: Option<Idempotency>,
) -> Result<String, ApiError> {
    let arn = create.instance_arn();
    let instance = app
        .inventory
        .describe(&arn)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()))?
        .ok_or_else(|| ApiError::bad_request(format!("aws.instance_arn: no instance or cluster {arn} was found")))?;
    engine::validate_prefix(&app.settings.role_prefix, &instance.engine)?;
    let mut record = runner::new_record(org, created_by, create, runner::spec_of(&instance, &arn.account));
    match app.jobs.create_job(NewJob { record: record.clone(), idempotency }).await? {
        Created::Replayed(job_id) => return Ok(job_id),
        Created::New => {}
    }
    match app.workflow.start(&record).await {
        Ok(execution) => {
            record.execution = Some(execution);
            // A quick job may have finished already; then there is nothing to record.
            app.jobs.update_job(&record).await?;
            Ok(record.job.id)
        }
        Err(reason) => {
            let message = format!("the workflow could not be started: {reason}");
            record.finish(Phase::Failed, &message);
            app.jobs.finish_job(&record, app.settings.expiry()).await?;
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("job {} failed: {message}", record.job.id)))
        }
    }
}

fn idempotency(request: &Request<Bytes>, body: &[u8]) -> Result<Option<Idempotency>, ApiError> {
    let Some(key) = request.headers().get("idempotency-key") else { return Ok(None) };
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

async fn find(app: &App, caller: &Caller, id: &str) -> Result<JobRecord, ApiError> {
    app.jobs.get_job(&caller.org, id).await?.ok_or_else(|| ApiError::not_found(format!("no job {id}")))
}

/// One job, exactly as seeds 000/001 show it.
#[utoipa::path(
    get, path = "/dbroles/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "The job", body = Job),
        (status = 404, description = "No such job in the caller's organisation", body = Message),
    ),
    security(("bearer" = []))
)]
pub(super) async fn get(app: &App, caller: &Caller, id: &str) -> ApiResult {
    json(StatusCode::OK, &find(app, caller, id).await?.job)
}

/// The organisation's jobs, newest first.
#[utoipa::path(
    get, path = "/dbroles/jobs", tag = "jobs",
    params(
        ("phase" = Option<Phase>, Query, description = "Only jobs in this phase"),
        ("db_arn" = Option<String>, Query, description = "Only jobs for this instance or cluster"),
        ("db_engine" = Option<String>, Query, description = "Only jobs for this engine"),
        ("created_after" = Option<String>, Query, description = "RFC 3339; only jobs created after"),
        ("created_before" = Option<String>, Query, description = "RFC 3339; only jobs created before"),
        ("limit" = Option<usize>, Query, description = "1 to 100, default 50"),
        ("next_token" = Option<String>, Query, description = "The previous page's next_token"),
    ),
    responses(
        (status = 200, description = "A page of jobs", body = Page<Job>),
        (status = 400, description = "A filter is invalid", body = Message),
    ),
    security(("bearer" = []))
)]
pub(super) async fn list(app: &App, caller: &Caller, params: &HashMap<String, String>) -> ApiResult {
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
    let query = JobQuery {
        phase,
        db_arn: params.get("db_arn").cloned(),
        db_engine: params.get("db_engine").cloned(),
        created_after: time("created_after")?,
        created_before: time("created_before")?,
        limit: limit(params, 50)?,
        next_token: params.get("next_token").cloned(),
    };
    json(StatusCode::OK, &app.jobs.list_jobs(&caller.org, &query).await?)
}

/// How many jobs the organisation has, by phase and by engine.
#[utoipa::path(
    get, path = "/dbroles/jobs/stats", tag = "jobs",
    responses((status = 200, description = "The counts", body = JobStats)),
    security(("bearer" = []))
)]
pub(super) async fn stats(app: &App, caller: &Caller) -> ApiResult {
    json(StatusCode::OK, &app.jobs.job_stats(&caller.org).await?)
}

/// Stops a running job: its execution is stopped and the job fails, naming who cancelled it.
#[utoipa::path(
    post, path = "/dbroles/jobs/{id}/cancel", tag = "jobs",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "The cancelled job", body = Job),
        (status = 404, description = "No such job", body = Message),
        (status = 409, description = "The job has already finished", body = Message),
        (status = 502, description = "The execution could not be stopped; the job still runs", body = Message),
    ),
    security(("bearer" = []))
)]
pub(super) async fn cancel(app: &App, caller: &Caller, id: &str) -> ApiResult {
    let mut record = find(app, caller, id).await?;
    let already_finished = || ApiError::conflict(format!("job {id} has already finished"));
    if !record.is_running() {
        return Err(already_finished());
    }
    let message = format!("cancelled by {}", caller.sub);
    if let Some(execution) = &record.execution {
        app.workflow.stop(execution, &message).await.map_err(|reason| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("job {id} is still running: its execution could not be stopped: {reason}"),
            )
        })?;
    }
    record.finish(Phase::Failed, message);
    if !app.jobs.finish_job(&record, app.settings.expiry()).await? {
        return Err(already_finished());
    }
    json(StatusCode::OK, &record.job)
}

/// Forgets a finished job.
#[utoipa::path(
    delete, path = "/dbroles/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such job", body = Message),
        (status = 409, description = "The job is running", body = Message),
    ),
    security(("bearer" = []))
)]
pub(super) async fn delete(app: &App, caller: &Caller, id: &str) -> ApiResult {
    app.jobs.delete_job(&caller.org, id).await.map_err(|error| match error {
        crate::store::StoreError::Running => ApiError::conflict(format!("job {id} is running: cancel it first")),
        crate::store::StoreError::NotFound => ApiError::not_found(format!("no job {id}")),
        other => other.into(),
    })?;
    no_content()
}
