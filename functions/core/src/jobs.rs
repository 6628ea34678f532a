//! A job's life, in one place: every state change of a job is a function here,
//! and the API, the triggers, the steps, `dbroles run` and the local workflow
//! call them and only translate inputs and errors.
//!
//! | change | function | called by |
//! | --- | --- | --- |
//! | created, lock taken, workflow started | [`start`] | `POST /dbroles/jobs`, the tag and rotation triggers, `dbroles run` |
//! | a step's progress saved | [`running`], [`save_progress`] | every step |
//! | stopped by a user | [`cancel`] | `POST /dbroles/jobs/{id}/cancel` |
//! | finished, lock released, announced | [`finalize`] | the Finalize step |
//! | failed after its execution died | [`repair`] | the status-change trigger, the local workflow |
//! | forgotten | [`delete`] | `DELETE /dbroles/jobs/{id}` |

use crate::deps::{App, Deps};
use crate::engine;
use crate::inventory::{Instance, InventoryError};
use crate::job::{Job, JobRecord, JobSpec, JobStatus, Phase, RoleResult, Timestamp};
use crate::request::{CreateJobRequest, Invalid};
use crate::store::{Created, Idempotency, JobStore, NewJob, Provisioned, StoreError};
use crate::workflow::{ExecutionInput, WorkflowError};

/// Why a change to a job was refused or failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobError {
    #[error("no job {0}")]
    NotFound(String),
    #[error("job {0} has already finished")]
    Finished(String),
    #[error("job {0} is running: cancel it first")]
    Running(String),
    #[error("aws.instance_arn: no instance or cluster {0} was found")]
    UnknownInstance(String),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("job {job_id} failed: the workflow could not be started: {source}")]
    NotStarted { job_id: String, source: WorkflowError },
    #[error("job {job_id} is still running: its execution could not be stopped: {source}")]
    NotStopped { job_id: String, source: WorkflowError },
}

/// The spec of a job from the instance (`account_arn` from the ARN's account).
pub fn spec_of(instance: &Instance, account: &str) -> JobSpec {
    JobSpec {
        account_arn: format!("arn:aws:iam::{account}:root"),
        db_arn: instance.arn.clone(),
        db_engine: instance.engine.clone(),
        db_name: instance.db_name.clone(),
        db_tags: instance.tags.clone(),
    }
}

/// A new running job for an instance.
pub fn new_record(org: &str, created_by: &str, request: CreateJobRequest, spec: JobSpec) -> JobRecord {
    JobRecord {
        job: Job {
            completed_at: None,
            created_at: Timestamp::now(),
            hook_status: None,
            id: crate::job::new_id(),
            org_id: org.to_string(),
            spec: Some(spec),
            status: Some(JobStatus { message: "the job is running".into(), phase: Phase::Running, result: Vec::new() }),
            webhook_status: None,
        },
        request,
        created_by: created_by.to_string(),
        execution: None,
    }
}

/// The job's final phase and message from its role results.
pub fn outcome(results: &[RoleResult]) -> (Phase, String) {
    let failed: Vec<&str> = results.iter().filter(|r| r.status != Phase::Completed).map(|r| r.user_role.as_str()).collect();
    if results.is_empty() {
        (Phase::Failed, "no role was provisioned".to_string())
    } else if failed.is_empty() {
        (Phase::Completed, "All user roles have been successfully provisioned".to_string())
    } else {
        (Phase::Failed, format!("provisioning failed for {}", failed.join(", ")))
    }
}

/// Stores a validated request as a running job (taking the instance's lock) and
/// starts its workflow: the job's id. If the workflow cannot start, the job is
/// failed with the reason and its lock released.
pub async fn start(
    app: &App,
    org: &str,
    created_by: &str,
    request: CreateJobRequest,
    idempotency: Option<Idempotency>,
) -> Result<String, JobError> {
    if let Some(vault) = &request.vault_provider {
        let policy = app.settings.vault.as_ref().ok_or_else(|| {
            Invalid("vault_provider: this deployment has no Vault; leave vault_provider out to use its store".into())
        })?;
        policy.path_for(org, &vault.secret_id)?;
    }
    let arn = request.instance_arn();
    let instance = app.inventory.describe(&arn).await?.ok_or_else(|| JobError::UnknownInstance(arn.to_string()))?;
    engine::validate_prefix(&app.settings.role_prefix, &instance.engine)?;
    let mut record = new_record(org, created_by, request, spec_of(&instance, &arn.account));
    if let Created::Replayed(job_id) = app.jobs.create_job(NewJob { record: record.clone(), idempotency }).await? {
        return Ok(job_id);
    }
    match app.workflow.start(&record).await {
        Ok(execution) => {
            record.execution = Some(execution);
            // A quick job may have finished already; then there is nothing to record.
            app.jobs.update_job(&record).await?;
            Ok(record.job.id)
        }
        Err(source) => {
            record.finish(Phase::Failed, format!("the workflow could not be started: {source}"));
            app.jobs.finish_job(&record, app.settings.expiry()).await?;
            Err(JobError::NotStarted { job_id: record.job.id, source })
        }
    }
}

/// One job of the organisation.
pub async fn find(app: &App, org: &str, id: &str) -> Result<JobRecord, JobError> {
    app.jobs.get_job(org, id).await?.ok_or_else(|| JobError::NotFound(id.to_string()))
}

/// Stops a running job: its execution is stopped and the job fails, naming who cancelled it.
pub async fn cancel(app: &App, org: &str, id: &str, by: &str) -> Result<Job, JobError> {
    let mut record = find(app, org, id).await?;
    if !record.is_running() {
        return Err(JobError::Finished(id.to_string()));
    }
    let message = format!("cancelled by {by}");
    if let Some(execution) = &record.execution {
        app.workflow.stop(execution, &message).await.map_err(|source| JobError::NotStopped { job_id: id.to_string(), source })?;
    }
    record.finish(Phase::Failed, message);
    if !app.jobs.finish_job(&record, app.settings.expiry()).await? {
        return Err(JobError::Finished(id.to_string()));
    }
    Ok(record.job)
}

/// Forgets a finished job.
pub async fn delete(app: &App, org: &str, id: &str) -> Result<(), JobError> {
    app.jobs.delete_job(org, id).await.map_err(|error| match error {
        StoreError::Running => JobError::Running(id.to_string()),
        StoreError::NotFound => JobError::NotFound(id.to_string()),
        other => other.into(),
    })
}

/// The job a step works on, if it is still running (not cancelled or finished).
pub async fn running(store: &dyn JobStore, input: &ExecutionInput) -> Result<JobRecord, JobError> {
    let record = store.get_job(&input.org_id, &input.job_id).await?.ok_or_else(|| JobError::NotFound(input.job_id.clone()))?;
    if !record.is_running() {
        return Err(JobError::Finished(input.job_id.clone()));
    }
    Ok(record)
}

/// Saves what a step learnt about a running job; a job finished meanwhile keeps what it says.
pub async fn save_progress(store: &dyn JobStore, record: &JobRecord) -> Result<(), JobError> {
    match store.update_job(record).await? {
        true => Ok(()),
        false => Err(JobError::Finished(record.id().to_string())),
    }
}

/// Writes the final status (from the role results, or the error that ended the
/// execution early), releases the lock, remembers a provisioned instance for
/// rotation, and announces the finished job. A job already finished is left as it is.
pub async fn finalize(deps: &Deps, input: &ExecutionInput, error: Option<String>) -> Result<(), StoreError> {
    let finished = finish_running(deps.jobs.as_ref(), input, &deps.settings, |record| match error {
        Some(message) => (Phase::Failed, message),
        None => outcome(record.job.status.as_ref().map_or(&[][..], |status| &status.result)),
    });
    let Some(record) = finished.await? else { return Ok(()) };
    if record.job.phase() == Phase::Completed {
        let provisioned =
            Provisioned { org: record.org().into(), db_arn: record.job.db_arn().into(), request: record.request.clone() };
        deps.jobs.mark_provisioned(&provisioned).await?;
    }
    if let Some(events) = &deps.events {
        // The job is finished either way; a lost announcement is logged, not retried into a second finish.
        if let Err(error) = events.job_finished(&record.job).await {
            tracing::warn!(job_id = record.id(), %error, "the job-finished event was not delivered");
        }
    }
    Ok(())
}

/// Fails a job whose execution ended without finalizing it (a killed Lambda, a
/// time-out, an abort) and releases its lock. `false` if the job had finished.
pub async fn repair(
    store: &dyn JobStore,
    input: &ExecutionInput,
    message: &str,
    settings: &crate::config::Settings,
) -> Result<bool, StoreError> {
    let finished = finish_running(store, input, settings, |_| (Phase::Failed, message.to_string())).await?;
    Ok(finished.is_some())
}

/// Finishes the job if it is still running, with the phase and message `outcome`
/// gives, and releases its lock: the finished job, or `None` if it had finished
/// (cancelled, finalized, or finished by a racing writer).
async fn finish_running(
    store: &dyn JobStore,
    input: &ExecutionInput,
    settings: &crate::config::Settings,
    outcome: impl FnOnce(&JobRecord) -> (Phase, String),
) -> Result<Option<JobRecord>, StoreError> {
    let Some(mut record) = store.get_job(&input.org_id, &input.job_id).await? else { return Ok(None) };
    if !record.is_running() {
        return Ok(None);
    }
    let (phase, message) = outcome(&record);
    record.finish(phase, message);
    Ok(store.finish_job(&record, settings.expiry()).await?.then_some(record))
}
