//! Fleet jobs: one request provisions (or rotates) every instance a selector
//! picks, across the organisation's accounts and regions. A fleet job's
//! execution (`statemachine/fleet.asl.json`) resolves the selector into a list of
//! instances, then a Distributed Map starts one ordinary job per instance, each
//! carried out by the provisioning state machine, at most `max_concurrency` at
//! once; the fleet job ends with counts and one event.
//!
//! | change | function | called by |
//! | --- | --- | --- |
//! | created, execution started | [`start`] | `POST /dbroles/fleet-jobs`, the rotation schedule |
//! | the selector resolved into instances | [`select`] | the fleet-select step |
//! | one instance's job created, or why not | [`start_child`] | the fleet-start-job step, per Map item |
//! | finished, counted, announced | [`finish`] | the fleet-finish step |
//! | cancelled: no new child, the running ones cancelled | [`cancel`] | `POST /dbroles/fleet-jobs/{id}/cancel` |
//! | failed after its execution died | [`repair`] | the status-change rule, the local workflow |
//! | failed when its execution never started or vanished | [`sweep`] | the sweep schedule, `dbroles serve`/`run` at start |
//! | forgotten | [`delete`] | `DELETE /dbroles/fleet-jobs/{id}` |

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};

use crate::deps::{App, Deps};
use crate::inventory::{InventoryError, Listed};
use crate::lifecycle::accounts::{self, AccountError, Tenancy};
use crate::lifecycle::jobs::{self, JobError, Naming};
use crate::model::account::Access;
use crate::model::fleet::{
    ChildInput, ChildOutcome, CreateFleetJobRequest, FleetCounts, FleetInput, FleetJob, FleetRecord, FleetStatus, NotStarted,
    Selection, MAX_INSTANCES,
};
use crate::model::job::{Job, Phase};
use crate::model::request::{CreateJobRequest, InstanceArn, Invalid, Mode};
use crate::model::Timestamp;
use crate::store::{FleetStore, JobQuery, JobStore, Page, StoreError};
use crate::workflow::{self, execution_arn, ExecutionState, WorkflowError};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FleetError {
    #[error("no fleet job {0}")]
    NotFound(String),
    #[error("fleet job {0} has already finished")]
    Finished(String),
    #[error("fleet job {0} is running: cancel it first")]
    Running(String),
    #[error("the selector matched {0} instances; a fleet job takes at most {MAX_INSTANCES}: narrow it (accounts, regions, engines, tags)")]
    TooMany(usize),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error(transparent)]
    Job(#[from] JobError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("fleet job {fleet_job_id} failed: its workflow could not be started: {source}")]
    NotStarted { fleet_job_id: String, source: WorkflowError },
    #[error("fleet job {fleet_job_id}: its execution could not be looked up: {source}")]
    Unknown { fleet_job_id: String, source: WorkflowError },
}

/// Stores a fleet job and starts its execution: its id. The accounts it names
/// must all be usable by the organisation; nothing is stored otherwise.
#[tracing::instrument(skip_all, fields(org = %org, fleet_job_id = tracing::field::Empty))]
pub async fn start(app: &App, org: &str, created_by: &str, request: CreateFleetJobRequest) -> Result<String, FleetError> {
    if let Some(vault) = &request.vault_provider {
        let policy = app.deps.settings.vault.as_ref().ok_or_else(|| {
            Invalid("vault_provider: this deployment has no Vault; leave vault_provider out to use its store".into())
        })?;
        policy.path_for(org, &vault.secret_id)?;
    }
    for account in &request.selector.accounts {
        accounts::access(Tenancy::of(&app.deps), org, account.as_str()).await?;
    }
    jobs::within_share(
        app.deps.jobs.as_ref(),
        app.deps.fleets.as_ref(),
        &app.deps.settings,
        org,
        request.max_concurrency as usize,
    )
    .await?;
    let id = crate::model::new_id();
    tracing::Span::current().record("fleet_job_id", id.as_str());
    let mut record = FleetRecord {
        execution: app.workflow.fleet_execution_id(&id),
        fleet: FleetJob {
            id,
            org_id: org.to_string(),
            created_at: Timestamp::now(),
            completed_at: None,
            created_by: created_by.to_string(),
            request,
            status: FleetStatus {
                phase: Phase::Running,
                message: "the fleet job is selecting its instances".into(),
                counts: FleetCounts::default(),
                not_started: Vec::new(),
                cancelled: false,
            },
        },
        selected: None,
    };
    app.deps.fleets.create_fleet(&record).await?;
    match app.workflow.start_fleet(&record).await {
        Ok(()) => Ok(record.fleet.id),
        Err(source) => {
            record.finish(Phase::Failed, format!("the workflow could not be started: {source}"), FleetCounts::default());
            app.deps.fleets.finish_fleet(&record, app.deps.settings.expiry()).await?;
            Err(FleetError::NotStarted { fleet_job_id: record.fleet.id, source })
        }
    }
}

/// One fleet job of the organisation, its counts up to date.
pub async fn find(fleets: &dyn FleetStore, jobs: &dyn JobStore, org: &str, id: &str) -> Result<FleetJob, FleetError> {
    let record = fleets.get_fleet(org, id).await?.ok_or_else(|| FleetError::NotFound(id.to_string()))?;
    with_counts(jobs, record).await
}

/// The organisation's fleet jobs, newest first, their counts up to date.
pub async fn list(
    fleets: &dyn FleetStore,
    jobs: &dyn JobStore,
    org: &str,
    limit: usize,
    next_token: Option<&str>,
) -> Result<Page<FleetJob>, FleetError> {
    let page = fleets.list_fleets(org, limit, next_token).await?;
    let mut items = Vec::with_capacity(page.items.len());
    for record in page.items {
        items.push(with_counts(jobs, record).await?);
    }
    Ok(Page { items, next_token: page.next_token })
}

/// A page of the fleet job's own jobs, newest first.
pub async fn children(
    jobs: &dyn JobStore,
    org: &str,
    id: &str,
    limit: usize,
    next_token: Option<String>,
) -> Result<Page<Job>, FleetError> {
    let query = JobQuery { fleet_job_id: Some(id.to_string()), limit, next_token, ..JobQuery::default() };
    Ok(jobs.list_jobs(org, &query).await?)
}

/// A running fleet job's counts are read from its jobs; a finished one's were kept when it finished.
async fn with_counts(jobs: &dyn JobStore, record: FleetRecord) -> Result<FleetJob, FleetError> {
    let mut fleet = record.fleet.clone();
    if record.is_running() {
        fleet.status.counts = counts(jobs, &record).await?;
    }
    Ok(fleet)
}

async fn counts(jobs: &dyn JobStore, record: &FleetRecord) -> Result<FleetCounts, StoreError> {
    let count = |phase| {
        let query = JobQuery { fleet_job_id: Some(record.id().to_string()), phase: Some(phase), ..JobQuery::default() };
        async move { jobs.count_jobs(record.org(), &query).await }
    };
    let (running, completed, failed) =
        (count(Phase::Running).await?, count(Phase::Completed).await?, count(Phase::Failed).await?);
    let not_started = &record.fleet.status.not_started;
    let skipped = not_started.iter().filter(|n| n.skipped).count() as u64;
    let failed = failed + not_started.iter().filter(|n| !n.skipped).count() as u64;
    let total = record.selected.as_ref().map_or(0, |selected| selected.len() as u64);
    let pending = total.saturating_sub(running + completed + failed + skipped);
    let mut counts = FleetCounts { total, pending, running, completed, failed, skipped, ..FleetCounts::default() };
    if record.fleet.request.mode == Mode::Plan {
        let (in_sync, drifted) = plans(jobs, record).await?;
        (counts.in_sync, counts.drifted) = (Some(in_sync), Some(drifted));
    }
    Ok(counts)
}

/// A fleet plan's completed jobs: how many found their instance in sync, and how many drifted.
async fn plans(jobs: &dyn JobStore, record: &FleetRecord) -> Result<(u64, u64), StoreError> {
    let (mut in_sync, mut drifted) = (0, 0);
    let mut next_token = None;
    loop {
        let query = JobQuery {
            fleet_job_id: Some(record.id().to_string()),
            phase: Some(Phase::Completed),
            limit: 100,
            next_token,
            ..JobQuery::default()
        };
        let page = jobs.list_jobs(record.org(), &query).await?;
        let found = page.items.iter().filter(|job| jobs::found_drift(job)).count() as u64;
        drifted += found;
        in_sync += page.items.len() as u64 - found;
        match page.next_token {
            Some(token) => next_token = Some(token),
            None => return Ok((in_sync, drifted)),
        }
    }
}

fn tag_matches(listed: &Listed, wanted: &str) -> bool {
    match wanted.split_once('=') {
        Some((key, value)) => listed.tags.iter().any(|t| t.key == key.trim() && t.value == value.trim()),
        None => listed.tags.iter().any(|t| t.key == wanted.trim()),
    }
}

/// Every account the organisation may use: the deployment's own if it is named
/// for it, and those it registered.
async fn usable_accounts(tenancy: Tenancy<'_>, org: &str) -> Result<Vec<String>, FleetError> {
    let mut usable: Vec<String> = tenancy.accounts.list_accounts(org).await?.into_iter().map(|a| a.account_id).collect();
    if tenancy.policy.allows_home(org) {
        usable.push(tenancy.inventory.home_account().await?);
    }
    Ok(usable)
}

/// Resolves the selector into the instances (sorted ARNs) and records them.
#[tracing::instrument(skip_all, fields(org = %input.org_id, fleet_job_id = %input.fleet_job_id))]
pub async fn select(deps: &Deps, input: &FleetInput) -> Result<Selection, FleetError> {
    let mut record = load_running(deps, input).await?;
    let request = &record.fleet.request;
    let selector = &request.selector;
    let org = record.org().to_string();
    let accounts = match selector.accounts.is_empty() {
        true => usable_accounts(Tenancy::of(deps), &org).await?,
        false => selector.accounts.iter().map(ToString::to_string).collect(),
    };
    let regions = match selector.regions.is_empty() {
        true => vec![deps.inventory.home_region()],
        false => selector.regions.clone(),
    };
    let mut found: Vec<Listed> = Vec::new();
    if selector.provisioned {
        let provisioned = deps.jobs.provisioned().await?;
        for instance in provisioned.into_iter().filter(|p| p.org == org) {
            let Ok(arn) = instance.db_arn.parse::<InstanceArn>() else { continue };
            if accounts.contains(&arn.account) && regions.contains(&arn.region) {
                found.push(Listed { arn: instance.db_arn, engine: String::new(), tags: Vec::new() });
            }
        }
    } else {
        for account in &accounts {
            let access: Access = accounts::access(Tenancy::of(deps), &org, account).await?;
            for region in &regions {
                found.extend(deps.inventory.list(&access, region).await?);
            }
        }
    }
    let matching = found.into_iter().filter(|listed| {
        (selector.provisioned || selector.engines.is_empty() || selector.engines.contains(&listed.engine))
            && selector.tags.iter().all(|tag| selector.provisioned || tag_matches(listed, tag))
    });
    let instances: Vec<String> = matching.map(|listed| listed.arn).collect::<BTreeSet<_>>().into_iter().collect();
    if instances.len() > MAX_INSTANCES {
        return Err(FleetError::TooMany(instances.len()));
    }
    record.selected = Some(instances.clone());
    record.fleet.status.message = format!("the fleet job is provisioning {} instances", instances.len());
    if !deps.fleets.update_fleet(&record).await? {
        return Err(FleetError::Finished(input.fleet_job_id.clone()));
    }
    Ok(Selection {
        org_id: org,
        fleet_job_id: input.fleet_job_id.clone(),
        instances,
        max_concurrency: request.max_concurrency,
        tolerated_failure_percentage: request.tolerated_failure_percentage,
    })
}

async fn load_running(deps: &Deps, input: &FleetInput) -> Result<FleetRecord, FleetError> {
    let record = deps.fleets.get_fleet(&input.org_id, &input.fleet_job_id).await?;
    let record = record.ok_or_else(|| FleetError::NotFound(input.fleet_job_id.clone()))?;
    match record.is_running() {
        true => Ok(record),
        false => Err(FleetError::Finished(input.fleet_job_id.clone())),
    }
}

/// The id of the fleet job's job for an instance: the same on every attempt, so
/// a retried Map item finds the job it created instead of a second one.
fn child_id(fleet_job_id: &str, instance_arn: &str) -> String {
    let digest = Sha256::digest(format!("dbroles/fleet-child/{fleet_job_id}/{instance_arn}").as_bytes());
    let bytes: [u8; 16] = digest[..16].try_into().expect("a SHA-256 digest has 16 bytes and more");
    uuid::Builder::from_custom_bytes(bytes).into_uuid().to_string().to_uppercase()
}

/// Creates the job of one instance (taking its server's lock), unless the fleet
/// job has ended or another job holds the server (`skipped`), or the job cannot
/// be created (`failed`, with why). Either is recorded on the fleet job.
#[tracing::instrument(skip_all, fields(org = %input.org_id, fleet_job_id = %input.fleet_job_id, instance = %input.instance_arn))]
pub async fn start_child(deps: &Deps, input: &ChildInput) -> Result<ChildOutcome, FleetError> {
    let fleet = FleetInput { org_id: input.org_id.clone(), fleet_job_id: input.fleet_job_id.clone() };
    let outcome = |outcome: &str, job_id: Option<String>, message: Option<String>| ChildOutcome {
        org_id: input.org_id.clone(),
        outcome: outcome.to_string(),
        job_id,
        message,
    };
    let record = match load_running(deps, &fleet).await {
        Ok(record) => record,
        Err(FleetError::Finished(_)) => return Ok(outcome("skipped", None, Some("the fleet job has ended".into()))),
        Err(error) => return Err(error),
    };
    let arn: InstanceArn = input.instance_arn.parse().map_err(|e| Invalid(format!("instance_arn: {e}")))?;
    let (mut request, resource_id) = match record.fleet.request.selector.provisioned {
        true => provisioned_request(deps, record.org(), &input.instance_arn).await?,
        false => (record.fleet.request.job_request(&arn), None),
    };
    // A provisioned instance's last request, in the fleet's mode (a drift check plans it).
    request.mode = record.fleet.request.mode;
    let job_id = child_id(record.id(), &input.instance_arn);
    // On AWS the item starts the provisioning machine's execution named after the job:
    // the job names it from the start, so a cancel stops it.
    let execution = deps.provision_machine.as_deref().map(|machine| execution_arn(machine, &job_id));
    let naming = Naming { job_id: job_id.clone(), fleet_job_id: Some(record.id().to_string()), execution, resource_id };
    let created = jobs::create(deps, record.org(), &record.fleet.created_by, request, None, Some(naming)).await;
    let (skipped, message) = match created {
        Ok(_) => return Ok(outcome("started", Some(job_id), None)),
        Err(JobError::Busy { job_id: Some(holder) }) if holder == job_id => return Ok(outcome("started", Some(job_id), None)),
        Err(error @ JobError::Busy { .. }) => (true, error.to_string()),
        Err(JobError::Store(error)) => return Err(error.into()),
        Err(JobError::Inventory(error)) if matches!(error, InventoryError::Unavailable(_)) => return Err(error.into()),
        Err(error) => (false, error.to_string()),
    };
    let note = NotStarted { instance_arn: input.instance_arn.clone(), skipped, message: message.clone() };
    deps.fleets.note_not_started(record.org(), record.id(), &note).await?;
    Ok(outcome(if skipped { "skipped" } else { "failed" }, None, Some(message)))
}

/// The request of the last job on a provisioned instance (rotation: new passwords,
/// the same roles), and the server it was provisioned on.
async fn provisioned_request(deps: &Deps, org: &str, arn: &str) -> Result<(CreateJobRequest, Option<String>), FleetError> {
    let found = deps.jobs.get_provisioned(org, arn).await?;
    found
        .map(|p| (p.request, p.resource_id))
        .ok_or_else(|| Invalid(format!("{arn} was not provisioned for organisation {org}")).into())
}

/// Writes the fleet job's result (its counts, and the error that ended its
/// execution early, if one did) and announces it. A fleet job already finished
/// (cancelled) is left as it is.
#[tracing::instrument(skip_all, fields(org = %input.org_id, fleet_job_id = %input.fleet_job_id))]
pub async fn finish(deps: &Deps, input: &FleetInput, error: Option<String>) -> Result<(), FleetError> {
    let Some(mut record) = deps.fleets.get_fleet(&input.org_id, &input.fleet_job_id).await? else { return Ok(()) };
    if !record.is_running() {
        return Ok(());
    }
    let counts = counts(deps.jobs.as_ref(), &record).await?;
    let mut message = format!(
        "{} instances: {} completed, {} failed, {} skipped",
        counts.total, counts.completed, counts.failed, counts.skipped
    );
    if let (Some(in_sync), Some(drifted)) = (counts.in_sync, counts.drifted) {
        message += &format!(" ({in_sync} in sync, {drifted} drifted)");
    }
    if counts.pending + counts.running > 0 {
        message += &format!(", {} not provisioned", counts.pending + counts.running);
    }
    if let Some(error) = &error {
        message = format!("{message}; the run ended early: {error}");
    }
    let phase = match error.is_none() && counts.failed == 0 && counts.pending + counts.running == 0 {
        true => Phase::Completed,
        false => Phase::Failed,
    };
    record.finish(phase, message, counts);
    if deps.fleets.finish_fleet(&record, deps.settings.expiry()).await? {
        crate::metrics::fleet_finished(&record.fleet.status.counts);
        announce(deps, &record.fleet).await;
    }
    Ok(())
}

async fn announce(deps: &Deps, fleet: &FleetJob) {
    if let Some(events) = &deps.events {
        if let Err(error) = events.fleet_finished(fleet).await {
            tracing::warn!(fleet_job_id = fleet.id, %error, "the fleet-finished event was not delivered");
        }
    }
}

/// Stops a running fleet job: it fails, naming who cancelled it, so no new job
/// starts; its execution is stopped, and every job of it still running is cancelled.
#[tracing::instrument(skip_all, fields(org = %org, fleet_job_id = %id))]
pub async fn cancel(app: &App, org: &str, id: &str, by: &str) -> Result<FleetJob, FleetError> {
    let mut record = app.deps.fleets.get_fleet(org, id).await?.ok_or_else(|| FleetError::NotFound(id.to_string()))?;
    if !record.is_running() {
        return Err(FleetError::Finished(id.to_string()));
    }
    let counts = counts(app.deps.jobs.as_ref(), &record).await?;
    let message = format!("cancelled by {by}");
    record.finish(Phase::Failed, message.clone(), counts);
    record.fleet.status.cancelled = true;
    if !app.deps.fleets.finish_fleet(&record, app.deps.settings.expiry()).await? {
        return Err(FleetError::Finished(id.to_string()));
    }
    if let Some(execution) = &record.execution {
        if let Err(error) = app.workflow.stop(execution, &message).await {
            tracing::warn!(fleet_job_id = id, %error, "the cancelled fleet job's execution could not be stopped");
        }
    }
    cancel_children(app, &record, by).await?;
    announce(&app.deps, &record.fleet).await;
    Ok(app.deps.fleets.get_fleet(org, id).await?.map_or(record.fleet, |record| record.fleet))
}

async fn cancel_children(app: &App, record: &FleetRecord, by: &str) -> Result<(), FleetError> {
    let mut next_token = None;
    loop {
        let query = JobQuery {
            fleet_job_id: Some(record.id().to_string()),
            phase: Some(Phase::Running),
            limit: 100,
            next_token,
            ..JobQuery::default()
        };
        let page = app.deps.jobs.list_jobs(record.org(), &query).await?;
        for job in &page.items {
            match jobs::cancel(app, record.org(), &job.id, by).await {
                Ok(_) | Err(JobError::Finished(_)) => {}
                Err(error) => return Err(error.into()),
            }
        }
        match page.next_token {
            Some(token) => next_token = Some(token),
            None => return Ok(()),
        }
    }
}

/// Fails a fleet job whose execution ended without finishing it. `false` if it had finished.
#[tracing::instrument(skip_all, fields(org = %input.org_id, fleet_job_id = %input.fleet_job_id))]
pub async fn repair(deps: &Deps, input: &FleetInput, message: &str) -> Result<bool, FleetError> {
    let Some(mut record) = deps.fleets.get_fleet(&input.org_id, &input.fleet_job_id).await? else { return Ok(false) };
    if !record.is_running() {
        return Ok(false);
    }
    let counts = counts(deps.jobs.as_ref(), &record).await?;
    record.finish(Phase::Failed, message.to_string(), counts);
    let finished = deps.fleets.finish_fleet(&record, deps.settings.expiry()).await?;
    if finished {
        announce(deps, &record.fleet).await;
    }
    Ok(finished)
}

/// The backstop for fleet executions that never report their end, as
/// [`jobs::sweep`] is for jobs: a running fleet job whose execution is missing
/// (never started: the API died between storing the fleet job and starting it;
/// or lost with a local process) or has ended is failed with `why`, counted and
/// announced. Those younger than `grace` are left alone: their execution may be
/// starting. Run after [`jobs::sweep`], which fails the fleet's own jobs first.
/// The fleet jobs failed.
pub async fn sweep(app: &App, why: &str, grace: chrono::Duration) -> Result<Vec<String>, FleetError> {
    let young = Timestamp(Timestamp::now().0 - grace);
    let mut failed = Vec::new();
    for record in app.deps.fleets.running_fleets().await? {
        if record.fleet.created_at > young {
            continue;
        }
        let state = workflow::state_of(app.workflow.as_ref(), record.execution.as_deref())
            .await
            .map_err(|source| FleetError::Unknown { fleet_job_id: record.id().to_string(), source })?;
        let message = match state {
            ExecutionState::Running => continue,
            ExecutionState::Missing => format!("the fleet job's execution never started or was lost: {why}"),
            ExecutionState::Ended => format!("the fleet job's execution ended without finishing it: {why}"),
        };
        if repair(&app.deps, &FleetInput::of(&record), &message).await? {
            tracing::warn!(
                fleet_job_id = record.id(),
                org = record.org(),
                message = message.as_str(),
                "the sweeper failed a fleet job"
            );
            failed.push(record.id().to_string());
        }
    }
    crate::metrics::jobs_stuck(failed.len());
    Ok(failed)
}

/// Forgets a finished fleet job (its jobs stay, each deleted on its own).
pub async fn delete(fleets: &dyn FleetStore, org: &str, id: &str) -> Result<(), FleetError> {
    fleets.delete_fleet(org, id).await.map_err(|error| match error {
        StoreError::Running => FleetError::Running(id.to_string()),
        StoreError::NotFound => FleetError::NotFound(id.to_string()),
        other => other.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::request::Validated;

    /// A request body as the API parses it.
    fn request(json: serde_json::Value) -> Result<CreateFleetJobRequest, Invalid> {
        CreateFleetJobRequest::parse(json.to_string().as_bytes()).map(|parsed| parsed.value)
    }

    #[test]
    fn a_fleet_request_is_validated_field_by_field() {
        let agent = "a1b2c3d4-e5f6-7890-abcd-ef1234567890";
        let ok = request(serde_json::json!({"selector": {}, "agent_id": agent})).unwrap();
        assert_eq!((ok.max_concurrency, ok.tolerated_failure_percentage), (8, 100.0));
        for (body, field) in [
            (serde_json::json!({"selector": {"accounts": ["12"]}, "agent_id": agent}), "selector.accounts"),
            (serde_json::json!({"selector": {"regions": ["mars"]}, "agent_id": agent}), "selector.regions"),
            (serde_json::json!({"selector": {"engines": ["oracle-ee"]}, "agent_id": agent}), "selector.engines"),
            (serde_json::json!({"selector": {"tags": ["=x"]}, "agent_id": agent}), "selector.tags"),
            (serde_json::json!({"selector": {}, "agent_id": agent, "max_concurrency": 0}), "max_concurrency"),
            (serde_json::json!({"selector": {}, "agent_id": agent, "tolerated_failure_percentage": 101}), "tolerated_failure"),
            (serde_json::json!({"selector": {}, "agent_id": "x"}), "agent_id"),
            (serde_json::json!({"selector": {}, "agent_id": agent, "aws": {"rotation": "double"}}), "aws.rotation"),
        ] {
            let error = request(body).unwrap_err().0;
            assert!(error.starts_with(field), "{field}: {error}");
        }
    }

    #[test]
    fn each_instance_gets_its_own_connection_names_and_a_stable_job_id() {
        let agent = "a1b2c3d4-e5f6-7890-abcd-ef1234567890";
        let aws = serde_json::json!({"rotation": "alternating"});
        let body = serde_json::json!({"selector": {}, "agent_id": agent, "connection_prefix_name": "prod-", "aws": aws});
        let fleet = request(body).unwrap();
        let arn: InstanceArn = "arn:aws:rds:us-east-1:123456789012:db:orders".parse().unwrap();
        let job = fleet.job_request(&arn);
        assert_eq!(job.connection_prefix_name, "prod-orders-");
        assert_eq!(job.aws.rotation, Some(crate::model::request::Rotation::Alternating), "each instance's job rotates so");
        job.validate().unwrap();
        assert_eq!(child_id("F1", arn.as_str()), child_id("F1", arn.as_str()));
        assert_ne!(child_id("F1", arn.as_str()), child_id("F2", arn.as_str()));
        assert_eq!(child_id("F1", arn.as_str()).len(), 36);
    }
}
