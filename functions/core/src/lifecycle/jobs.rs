//! A job's life, in one place: every state change of a job is a function here,
//! and the API, the triggers, the steps, `dbroles run` and the local workflow
//! call them and only translate inputs and errors.
//!
//! | change | function | called by |
//! | --- | --- | --- |
//! | created, lock taken, workflow started | [`start`] | `POST /dbroles/jobs`, the tag trigger, `dbroles run` |
//! | created, lock taken, for a fleet job's Map | [`create`] | the fleet-start-job step ([`crate::lifecycle::fleet::start_child`]) |
//! | a step's progress saved | [`load_running`], [`save_progress`] | every step |
//! | stopped by a user (the lock kept) | [`cancel`] | `POST /dbroles/jobs/{id}/cancel` |
//! | finished, lock released, announced | [`finalize`] | the Finalize step |
//! | failed after its execution died, lock released | [`repair`] | the status-change trigger, the local workflow |
//! | forgotten | [`delete`] | `DELETE /dbroles/jobs/{id}` |
//! | failed when its execution never started or vanished, lock released | [`sweep`] | the sweep schedule, `dbroles serve`/`run` at start |
//!
//! A job acts only on an instance in an account its organisation may use
//! ([`accounts::access`]), and holds its database server (the instance, or its
//! Aurora cluster) from creation until its execution has ended, whoever else asks.

use crate::config::Settings;
use crate::deps::{App, Deps};
use crate::engine;
use crate::inventory::{Instance, InventoryError};
use crate::lifecycle::accounts::{self, AccountError, Tenancy};
use crate::model::job::{Job, JobRecord, JobSpec, JobStatus, Phase, RoleResult};
use crate::model::request::{CreateJobRequest, Invalid, Mode};
use crate::model::Timestamp;
use crate::store::{Created, FleetStore, Idempotency, JobQuery, JobStore, NewJob, Provisioned, StoreError};
use crate::workflow::{self, ExecutionInput, ExecutionState, WorkflowError};

/// Why a change to a job was refused or failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobError {
    #[error("no job {0}")]
    NotFound(String),
    #[error("job {0} has already finished")]
    Finished(String),
    #[error("job {0} is running: cancel it first")]
    Running(String),
    /// The server is held by a running job (or one whose execution has not yet ended).
    #[error("{}", busy(.job_id))]
    Busy { job_id: Option<String> },
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error("aws.instance_arn: no instance or cluster {0} was found")]
    UnknownInstance(String),
    /// The instance was deleted and created again since dbroles provisioned it: its records are not carried over.
    #[error("{0} was deleted and created again since dbroles provisioned it: the new server is not rotated with the old one's records")]
    Replaced(String),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("job {job_id} failed: the workflow could not be started: {source}")]
    NotStarted { job_id: String, source: WorkflowError },
    /// Fair share: the organisation has as many jobs running as it may.
    #[error("organisation {org} has {running} jobs running, as many as this deployment lets one organisation run at once ({limit}): try again when some have finished")]
    OverShare { org: String, running: usize, limit: usize },
}

/// How many seconds a client refused for fair share waits (`Retry-After`).
pub const RETRY_AFTER_SECS: u64 = 30;

/// Fair share: `adding` more jobs keep the organisation within its share of the
/// deployment ([`crate::config::Settings::org_concurrency`]), counting its
/// running jobs and the concurrency its running fleet jobs may still use.
/// Concurrent requests may pass together: the share is a bound on what one
/// organisation can take, not an exact count. The running jobs are read newest
/// first and no further than one past the share, so a create never counts the
/// organisation's whole history.
pub async fn within_share(
    jobs: &dyn JobStore,
    fleets: &dyn FleetStore,
    settings: &Settings,
    org: &str,
    adding: usize,
) -> Result<(), JobError> {
    let limit = settings.org_concurrency;
    let query = JobQuery { phase: Some(Phase::Running), limit: limit + 1, ..JobQuery::default() };
    let mut running = jobs.list_jobs(org, &query).await?.items.len();
    let fleets = fleets.list_fleets(org, 100, None).await?;
    running += fleets
        .items
        .iter()
        .filter(|fleet| fleet.is_running())
        .map(|fleet| fleet.fleet.request.max_concurrency as usize)
        .sum::<usize>();
    match running + adding > limit {
        true => Err(JobError::OverShare { org: org.into(), running, limit }),
        false => Ok(()),
    }
}

fn busy(job_id: &Option<String>) -> String {
    match job_id {
        Some(job_id) => format!("job {job_id} is running on this database server (or its execution has not ended yet)"),
        None => "another organisation's job is running on this database server".to_string(),
    }
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
            id: crate::model::new_id(),
            org_id: org.to_string(),
            spec: Some(spec),
            status: Some(JobStatus { message: "the job is running".into(), phase: Phase::Running, result: Vec::new() }),
            webhook_status: None,
            fleet_job_id: None,
            cancelled: false,
        },
        request,
        created_by: created_by.to_string(),
        execution: None,
        lock: String::new(),
        access: None,
        resource_id: None,
        endpoint_host: None,
    }
}

/// The job's final phase and message from its role results.
pub fn outcome(mode: Mode, results: &[RoleResult]) -> (Phase, String) {
    let failed: Vec<&str> = results.iter().filter(|r| r.status != Phase::Completed).map(|r| r.user_role.as_str()).collect();
    if results.is_empty() {
        (Phase::Failed, "no role was provisioned".to_string())
    } else if !failed.is_empty() {
        let what = match mode {
            Mode::Run => "provisioning",
            Mode::Plan => "planning",
            Mode::Revoke => "retiring",
        };
        (Phase::Failed, format!("{what} failed for {}", failed.join(", ")))
    } else if mode == Mode::Plan {
        let drifted: Vec<&str> = results.iter().filter(|r| drifted(r)).map(|r| r.user_role.as_str()).collect();
        match drifted.is_empty() {
            true => (Phase::Completed, format!("{IN_SYNC}: a run would change nothing")),
            false => (Phase::Completed, format!("{DRIFTED}: a run would change {}", drifted.join(", "))),
        }
    } else if mode == Mode::Revoke {
        (Phase::Completed, "All user roles have been retired".to_string())
    } else {
        (Phase::Completed, "All user roles have been successfully provisioned".to_string())
    }
}

/// How a plan's message begins when a run would change nothing, and when it would.
const IN_SYNC: &str = "in sync";
const DRIFTED: &str = "drifted";

/// A completed plan job that found a role a run would change (or that holds
/// what the master may not revoke): its message begins `drifted`.
pub fn found_drift(plan: &Job) -> bool {
    plan.status.as_ref().is_some_and(|status| status.phase == Phase::Completed && status.result.iter().any(drifted))
}

/// A role a run would change, or that holds what the master may not revoke.
fn drifted(result: &RoleResult) -> bool {
    result.changes.as_ref().is_some_and(|changes| !changes.is_empty()) || !result.not_revocable.is_empty()
}

/// What [`create`] stored: a new job, or the one an earlier request with the same idempotency key created.
#[derive(Debug)]
pub enum Stored {
    New(JobRecord),
    Replayed(String),
}

/// What a job is called before it is stored.
#[derive(Clone, Debug)]
pub struct Naming {
    pub job_id: String,
    /// The fleet job whose Map item creates the job (its id derived from the
    /// fleet job and the instance, so a retried item finds its job).
    pub fleet_job_id: Option<String>,
    /// The execution that will carry the job out, named after it.
    pub execution: Option<String>,
    /// The server the job's request was made for (a rotation's provisioned
    /// records): another under the same ARN is refused.
    pub resource_id: Option<String>,
}

/// Stores a validated request as a running job, taking its database server's
/// lock, without starting anything: the instance must exist in an account the
/// organisation may use. The job is called as `naming` says, or gets a new id.
#[tracing::instrument(skip_all, fields(org = %org, job_id = tracing::field::Empty))]
pub async fn create(
    deps: &Deps,
    org: &str,
    created_by: &str,
    request: CreateJobRequest,
    idempotency: Option<Idempotency>,
    naming: Option<Naming>,
) -> Result<Stored, JobError> {
    if let Some(vault) = &request.vault_provider {
        let policy = deps.settings.vault.as_ref().ok_or_else(|| {
            Invalid("vault_provider: this deployment has no Vault; leave vault_provider out to use its store".into())
        })?;
        policy.path_for(org, &vault.secret_id)?;
    }
    let arn = request.instance_arn();
    let access = accounts::access(Tenancy::of(deps), org, &arn.account).await?;
    let instance = deps.inventory.describe(&arn, &access).await?.ok_or_else(|| JobError::UnknownInstance(arn.to_string()))?;
    if let Some(expected) = naming.as_ref().and_then(|naming| naming.resource_id.as_deref()) {
        if expected != instance.resource_id {
            return Err(JobError::Replaced(arn.to_string()));
        }
    }
    accounts::claim(deps.accounts.as_ref(), org, &instance).await?;
    let alternating = deps.settings.rotation_of(&request).is_alternating() && request.mode.follows_rotation();
    let family = engine::validate_prefix(&deps.settings.role_prefix, &instance.engine, alternating)?;
    if family == engine::Family::MySql && !request.scope.schemas.is_everything() {
        let message = "scope.schemas: MySQL and MariaDB have no schemas within a database; scope them with scope.databases";
        return Err(Invalid(message.into()).into());
    }
    let mut record = new_record(org, created_by, request, spec_of(&instance, &arn.account));
    if let Some(naming) = naming {
        record.job.id = naming.job_id;
        record.job.fleet_job_id = naming.fleet_job_id;
        record.execution = naming.execution;
    }
    tracing::Span::current().record("job_id", record.job.id.as_str());
    record.lock = instance.server_arn().to_string();
    record.access = Some(access);
    record.resource_id = Some(instance.resource_id.clone());
    let new = NewJob { record: record.clone(), idempotency, lease_until: deps.settings.lease() };
    match deps.jobs.create_job(new).await {
        Ok(Created::Replayed(job_id)) => Ok(Stored::Replayed(job_id)),
        Ok(Created::New) => Ok(Stored::New(record)),
        Err(StoreError::Locked { job_id, org: holder }) => Err(JobError::Busy { job_id: (holder == org).then_some(job_id) }),
        Err(error) => Err(error.into()),
    }
}

/// Stores a validated request as a running job (taking its database server's
/// lock) and starts its workflow: the job's id. Nothing is stored if the
/// organisation may not act on the instance's account. If the workflow cannot
/// start, the job is failed with the reason and its lock released.
#[tracing::instrument(skip_all, fields(org = %org, job_id = tracing::field::Empty))]
pub async fn start(
    app: &App,
    org: &str,
    created_by: &str,
    request: CreateJobRequest,
    idempotency: Option<Idempotency>,
) -> Result<String, JobError> {
    within_share(app.deps.jobs.as_ref(), app.deps.fleets.as_ref(), &app.deps.settings, org, 1).await?;
    let job_id = crate::model::new_id();
    tracing::Span::current().record("job_id", job_id.as_str());
    let naming = Naming { execution: Some(app.workflow.execution_id(&job_id)), job_id, fleet_job_id: None, resource_id: None };
    let mut record = match create(&app.deps, org, created_by, request, idempotency, Some(naming)).await? {
        Stored::New(record) => record,
        Stored::Replayed(job_id) => return Ok(job_id),
    };
    match app.workflow.start(&record).await {
        Ok(()) => {
            crate::metrics::job_started(record.job.db_engine());
            Ok(record.job.id)
        }
        Err(source) => {
            record.finish(Phase::Failed, format!("the workflow could not be started: {source}"));
            app.deps.jobs.finish_and_release(&record, app.deps.settings.expiry()).await?;
            Err(JobError::NotStarted { job_id: record.job.id, source })
        }
    }
}

/// One job of the organisation.
pub async fn find(store: &dyn JobStore, org: &str, id: &str) -> Result<JobRecord, JobError> {
    store.get_job(org, id).await?.ok_or_else(|| JobError::NotFound(id.to_string()))
}

/// Stops a running job: the job fails, naming who cancelled it, and its execution
/// is stopped. The lock stays until the execution has ended ([`finalize`] or
/// [`repair`]), so a step still running never overlaps the next job. An execution
/// that could not be stopped ends at its next step, which finds the job finished.
#[tracing::instrument(skip_all, fields(org = %org, job_id = %id))]
pub async fn cancel(app: &App, org: &str, id: &str, by: &str) -> Result<Job, JobError> {
    let mut record = find(app.deps.jobs.as_ref(), org, id).await?;
    if !record.is_running() {
        return Err(JobError::Finished(id.to_string()));
    }
    let message = format!("cancelled by {by}");
    record.finish(Phase::Failed, message.clone());
    record.job.cancelled = true;
    if !app.deps.jobs.finish_job(&record, app.deps.settings.expiry()).await? {
        return Err(JobError::Finished(id.to_string()));
    }
    if let Some(execution) = &record.execution {
        if let Err(error) = app.workflow.stop(execution, &message).await {
            tracing::warn!(job_id = id, %error, "the cancelled job's execution could not be stopped: it ends at its next step");
        }
    }
    Ok(record.job)
}

/// Forgets a finished job.
#[tracing::instrument(skip_all, fields(org = %org, job_id = %id))]
pub async fn delete(store: &dyn JobStore, org: &str, id: &str) -> Result<(), JobError> {
    store.delete_job(org, id).await.map_err(|error| match error {
        StoreError::Running => JobError::Running(id.to_string()),
        StoreError::NotFound => JobError::NotFound(id.to_string()),
        other => other.into(),
    })
}

/// The job a step works on, if it is still running (not cancelled or finished).
pub async fn load_running(store: &dyn JobStore, input: &ExecutionInput) -> Result<JobRecord, JobError> {
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
/// rotation, and announces the finished job. A job already finished (cancelled)
/// is left as it is, and its lock released: its execution has ended.
#[tracing::instrument(skip_all, fields(org = %input.org_id, job_id = %input.job_id))]
pub async fn finalize(deps: &Deps, input: &ExecutionInput, error: Option<String>) -> Result<(), StoreError> {
    let finished = finish_running(deps.jobs.as_ref(), input, &deps.settings, |record| match error {
        Some(message) => (Phase::Failed, message),
        None => outcome(record.request.mode, record.job.status.as_ref().map_or(&[][..], |status| &status.result)),
    });
    let Some(record) = finished.await? else { return Ok(()) };
    crate::metrics::job_finished(&record.job);
    if record.job.phase() == Phase::Completed {
        let (org, db_arn) = (record.org(), record.job.db_arn());
        match record.request.mode {
            Mode::Run => {
                let request = record.request.clone();
                let provisioned = Provisioned {
                    org: org.into(),
                    db_arn: db_arn.into(),
                    request,
                    resource_id: record.resource_id.clone(),
                    server_arn: Some(record.lock_key().to_string()),
                    endpoint_host: record.endpoint_host.clone(),
                };
                deps.jobs.mark_provisioned(&provisioned).await?;
            }
            // Its roles are gone: the rotation schedule no longer provisions it.
            Mode::Revoke => deps.jobs.forget_provisioned(org, db_arn).await?,
            Mode::Plan => {}
        }
    }
    if let Some(events) = &deps.events {
        // The job is finished either way; a lost announcement is logged, not retried into a second finish.
        if let Err(error) = events.job_finished(&record.job).await {
            tracing::warn!(job_id = record.id(), %error, "the job-finished event was not delivered");
        }
        if record.request.mode == Mode::Plan && found_drift(&record.job) {
            if let Err(error) = events.drift_detected(&record.job).await {
                tracing::warn!(job_id = record.id(), %error, "the drift-detected event was not delivered");
            }
        }
    }
    Ok(())
}

/// Fails a job whose execution ended without finalizing it (a killed Lambda, a
/// time-out, an abort) and releases its lock, also if the job had finished (a
/// cancel). `false` if the job had finished.
#[tracing::instrument(skip_all, fields(org = %input.org_id, job_id = %input.job_id))]
pub async fn repair(
    store: &dyn JobStore,
    input: &ExecutionInput,
    message: &str,
    settings: &Settings,
) -> Result<bool, StoreError> {
    let finished = finish_running(store, input, settings, |_| (Phase::Failed, message.to_string())).await?;
    Ok(finished.is_some())
}

/// At the end of a job's execution: finishes the job if it is still running,
/// with the phase and message `outcome` gives, and releases its lock either way.
/// The finished job, or `None` if it had finished (cancelled, finalized, or
/// finished by a racing writer).
async fn finish_running(
    store: &dyn JobStore,
    input: &ExecutionInput,
    settings: &Settings,
    outcome: impl FnOnce(&JobRecord) -> (Phase, String),
) -> Result<Option<JobRecord>, StoreError> {
    let Some(mut record) = store.get_job(&input.org_id, &input.job_id).await? else { return Ok(None) };
    if !record.is_running() {
        store.release_lock(record.lock_key(), record.id()).await?;
        return Ok(None);
    }
    let (phase, message) = outcome(&record);
    record.finish(phase, message);
    let finished = store.finish_and_release(&record, settings.expiry()).await?;
    Ok(finished.then_some(record))
}

/// What a sweep found and did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Jobs failed because their execution never started or is gone.
    pub failed: Vec<String>,
    /// Servers released whose job had finished, or whose job record is gone.
    pub released: Vec<String>,
}

/// How long a new job's execution may take to appear before the sweeper counts it missing.
pub fn start_grace() -> chrono::Duration {
    chrono::Duration::minutes(2)
}

/// The backstop for executions that never report their end: for every held
/// database server, whose job's execution is missing (never started: the API
/// died between storing the job and starting it, or a fleet's Map item was
/// aborted first; or lost with a local process) or has ended without releasing
/// it, the job is failed with `why` if it still runs and the server released. A
/// lock whose job record is gone is released. Jobs younger than `grace` are left
/// alone: their execution may be starting.
pub async fn sweep(app: &App, why: &str, grace: chrono::Duration) -> Result<Swept, JobError> {
    let mut swept = Swept::default();
    let young = Timestamp(Timestamp::now().0 - grace);
    for lock in app.deps.jobs.locks().await? {
        let Some(record) = app.deps.jobs.get_job(&lock.org, &lock.job_id).await? else {
            app.deps.jobs.release_lock(&lock.server, &lock.job_id).await?;
            tracing::warn!(server = lock.server.as_str(), job_id = lock.job_id.as_str(), "released a lock whose job is gone");
            swept.released.push(lock.server);
            continue;
        };
        // A fleet's job run in the fleet's own execution (locally) lives as long as it does.
        let execution = match (&record.execution, &record.job.fleet_job_id) {
            (Some(execution), _) => Some(execution.clone()),
            (None, Some(fleet)) => app.deps.fleets.get_fleet(record.org(), fleet).await?.and_then(|fleet| fleet.execution),
            (None, None) => None,
        };
        let state = workflow::state_of(app.workflow.as_ref(), execution.as_deref())
            .await
            .map_err(|source| JobError::NotStarted { job_id: record.id().to_string(), source })?;
        if state == ExecutionState::Running || (record.is_running() && record.job.created_at > young) {
            continue;
        }
        let message = match state {
            ExecutionState::Missing => format!("the job's execution never started or was lost: {why}"),
            _ => format!("the job's execution ended without finishing the job: {why}"),
        };
        let input = ExecutionInput::of(&record);
        match repair(app.deps.jobs.as_ref(), &input, &message, &app.deps.settings).await? {
            true => {
                tracing::warn!(job_id = record.id(), org = record.org(), message = message.as_str(), "the sweeper failed a job");
                swept.failed.push(record.id().to_string());
            }
            false => swept.released.push(lock.server),
        }
    }
    crate::metrics::jobs_stuck(swept.failed.len());
    Ok(swept)
}
