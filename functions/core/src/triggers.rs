//! Jobs that start on their own, from EventBridge: an RDS instance or cluster
//! created with the provisioning tag, the rotation and drift schedules (one
//! fleet job per organisation), servers that were deleted (their credentials
//! and connections removed), and the repair of jobs and fleet jobs whose Step Functions
//! execution ended without finishing them.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use crate::config::TriggerSettings;
use crate::deps::App;
use crate::lifecycle::accounts::{self, AccountError, Tenancy};
use crate::lifecycle::fleet::{self, FleetError};
use crate::lifecycle::gone::{self, Gone};
use crate::lifecycle::jobs::{self, JobError};
use crate::model::fleet::{CreateFleetJobRequest, FleetInput, Selector};
use crate::model::request::Validated;
use crate::model::request::{AwsRequest, CreateJobRequest, InstanceArn, JobStep, Mode};
use crate::model::scope::Scope;
use crate::model::AgentId;
use crate::store::StoreError;
use crate::workflow::ExecutionInput;

/// Why an event could not be handled (EventBridge retries it, then the dead-letter queue keeps it).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TriggerError {
    #[error("not an event dbroles handles: source '{event_source}', detail-type '{detail_type}'")]
    Unknown { event_source: String, detail_type: String },
    #[error("{0}")]
    Malformed(String),
    #[error(transparent)]
    Job(#[from] JobError),
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fleet(#[from] FleetError),
}

/// What a trigger did, as the function answers it (and logs).
#[derive(Debug, Default, PartialEq, Serialize)]
pub struct Outcome {
    pub started: Vec<String>,
    pub skipped: Vec<String>,
    pub repaired: Vec<String>,
}

/// RDS event ids for "instance created" and "cluster created".
const INSTANCE_CREATED: &str = "RDS-EVENT-0005";
const CLUSTER_CREATED: &str = "RDS-EVENT-0170";

pub async fn handle(app: &App, settings: &TriggerSettings, event: &Value) -> Result<Outcome, TriggerError> {
    let text = |pointer: &str| event.pointer(pointer).and_then(Value::as_str).unwrap_or_default();
    match (text("/source"), text("/detail-type")) {
        ("aws.rds", "RDS DB Instance Event" | "RDS DB Cluster Event") if is_deletion(event) => {
            Ok(checked(gone::deleted(app, text("/detail/SourceArn")).await?))
        }
        ("aws.rds", "RDS DB Instance Event" | "RDS DB Cluster Event") => {
            let id = text("/detail/EventID");
            if id != INSTANCE_CREATED && id != CLUSTER_CREATED {
                return Ok(Outcome { skipped: vec![format!("RDS event {id} is not a creation")], ..Outcome::default() });
            }
            instance_created(app, settings, text("/detail/SourceArn")).await
        }
        ("aws.events", "Scheduled Event") => every_provisioned(app, Mode::Run).await,
        (SWEEP_SOURCE, SWEEP_DETAIL_TYPE) => sweep(app).await,
        (SWEEP_SOURCE, DRIFT_CHECK_DETAIL_TYPE) => every_provisioned(app, Mode::Plan).await,
        (SWEEP_SOURCE, GONE_SWEEP_DETAIL_TYPE) => Ok(checked(gone::sweep(app).await?)),
        ("aws.states", "Step Functions Execution Status Change") => execution_ended(app, event).await,
        (source, kind) => Err(TriggerError::Unknown { event_source: source.into(), detail_type: kind.into() }),
    }
}

/// An RDS event in the `deletion` category (an instance's, or an Aurora cluster's).
fn is_deletion(event: &Value) -> bool {
    let categories = event.pointer("/detail/EventCategories").and_then(Value::as_array);
    categories.is_some_and(|categories| categories.iter().any(|category| category == "deletion"))
}

/// What the checks of servers that may be gone did: each retired one's job
/// (under `repaired`), and why the others were left.
fn checked(servers: Vec<(String, Gone)>) -> Outcome {
    let mut outcome = Outcome::default();
    for (arn, gone) in servers {
        match gone {
            Gone::Retired { job_id } => outcome.repaired.push(job_id),
            Gone::StillThere => outcome.skipped.push(format!("{arn} still exists")),
            Gone::Busy => outcome.skipped.push(format!("{arn}: a job still runs on it; the next sweep retires it")),
            Gone::Unchecked(why) => outcome.skipped.push(format!("{arn}: {why}")),
        }
    }
    outcome
}

/// A skipped event, logged with why.
fn skipped(why: String) -> Outcome {
    tracing::warn!(reason = why.as_str(), "the event starts no job");
    Outcome { skipped: vec![why], ..Outcome::default() }
}

/// Starts a job for a new instance tagged for provisioning, in the organisation its
/// `dbroles:org` tag names, only if that organisation may act on the instance's account.
async fn instance_created(app: &App, settings: &TriggerSettings, arn: &str) -> Result<Outcome, TriggerError> {
    let parsed: InstanceArn = arn.parse().map_err(|e| TriggerError::Malformed(format!("the event's SourceArn: {e}")))?;
    let allowed = accounts::organisations(Tenancy::of(&app.deps), &parsed.account).await?;
    let Some((_, reach)) = allowed.first() else {
        return Ok(skipped(format!("{arn}: no organisation may act on account {}", parsed.account)));
    };
    let Some(instance) = app.deps.inventory.describe(&parsed, reach).await.map_err(JobError::from)? else {
        return Ok(skipped(format!("{arn} no longer exists")));
    };
    let tag = |key: &str| instance.tags.iter().find(|t| t.key == key).map(|t| t.value.clone());
    if tag(&settings.tag_key).as_deref() != Some(settings.tag_value.as_str()) {
        return Ok(Outcome {
            skipped: vec![format!("{arn} is not tagged {}={}", settings.tag_key, settings.tag_value)],
            ..Outcome::default()
        });
    }
    let malformed = |e: String| TriggerError::Malformed(format!("the tags of {arn} make an invalid request: {e}"));
    let agent_id = match tag("dbroles:agent-id") {
        Some(tagged) => Some(tagged.parse::<AgentId>().map_err(|e| malformed(format!("agent_id: {e}")))?),
        None => settings.default_agent_id.clone(),
    };
    let job_steps = if agent_id.is_some() { vec![JobStep::CreateConnections] } else { Vec::new() };
    let request = CreateJobRequest {
        agent_id: agent_id.unwrap_or_else(AgentId::nil),
        aws: AwsRequest {
            instance_arn: arn.to_string(),
            default_security_group: None,
            allow_master_password_reset: false,
            adopt_existing_roles: false,
            // The deployment's own (`RotationStrategy`, `MaxDbConnections`): a tag chooses neither.
            rotation: None,
            max_db_connections: None,
        },
        connection_prefix_name: tag("dbroles:connection-prefix").unwrap_or_else(|| format!("{}-", instance.identifier)),
        job_steps,
        vault_provider: None,
        mode: Mode::Run,
        scope: Scope::default(),
    };
    request.validate().map_err(|e| malformed(e.0))?;
    let org = tag("dbroles:org").unwrap_or_else(|| settings.default_org.clone());
    if !allowed.iter().any(|(allowed, _)| *allowed == org) {
        return Ok(skipped(format!("{arn}: organisation {org} may not act on account {}", parsed.account)));
    }
    let job_id = jobs::start(app, &org, "eventbridge:rds-created", request, None).await?;
    Ok(Outcome { started: vec![job_id], ..Outcome::default() })
}

/// Starts one fleet job per organisation over the instances dbroles has
/// provisioned for it, each instance's job as its last one asked, at most
/// [`ROTATION_CONCURRENCY`] at once: the rotation (mode `run`: new passwords for
/// every role), or the drift check (mode `plan`: each drifted instance announced).
async fn every_provisioned(app: &App, mode: Mode) -> Result<Outcome, TriggerError> {
    // Each organisation's provisioned instances' regions, from one listing.
    let mut regions: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for provisioned in app.deps.jobs.provisioned().await? {
        let region = provisioned.db_arn.parse::<InstanceArn>().ok().map(|arn| arn.region);
        regions.entry(provisioned.org).or_default().extend(region);
    }
    let mut outcome = Outcome::default();
    for (org, regions) in regions {
        let request = CreateFleetJobRequest {
            selector: Selector { provisioned: true, regions: regions.into_iter().collect(), ..Selector::default() },
            agent_id: AgentId::nil(),
            connection_prefix_name: String::new(),
            job_steps: Vec::new(),
            vault_provider: None,
            aws: Default::default(),
            max_concurrency: ROTATION_CONCURRENCY,
            tolerated_failure_percentage: 100.0,
            mode,
            // Each instance's job replays its last request, scope included.
            scope: Scope::default(),
        };
        let created_by = if mode == Mode::Plan { "eventbridge:drift-check" } else { "eventbridge:rotation" };
        match fleet::start(app, &org, created_by, request).await {
            Ok(fleet_job_id) => outcome.started.push(fleet_job_id),
            Err(error) => outcome.skipped.push(format!("organisation {org}: {error}")),
        }
    }
    Ok(outcome)
}

/// The sweep schedule's event (the rule's fixed input): the backstop for jobs
/// whose execution never started or vanished without the status-change event.
pub const SWEEP_SOURCE: &str = "dbroles";
pub const SWEEP_DETAIL_TYPE: &str = "Sweep";
/// The drift schedule's event (`DriftSchedule`): a plan over every provisioned instance.
pub const DRIFT_CHECK_DETAIL_TYPE: &str = "Drift Check";
/// The daily sweep's event: every provisioned server checked, and those gone retired.
pub const GONE_SWEEP_DETAIL_TYPE: &str = "Gone Sweep";

async fn sweep(app: &App) -> Result<Outcome, TriggerError> {
    let why = "found by the sweep schedule";
    let swept = jobs::sweep(app, why, jobs::start_grace()).await?;
    let fleets = fleet::sweep(app, why, jobs::start_grace()).await?;
    let released = swept.released.into_iter().map(|server| format!("released {server}"));
    let repaired = swept.failed.into_iter().chain(fleets.into_iter().map(|id| format!("fleet job {id}"))).collect();
    Ok(Outcome { repaired, skipped: released.collect(), ..Outcome::default() })
}

/// How many instances a rotation fleet job provisions at once.
pub const ROTATION_CONCURRENCY: u32 = 8;

/// Marks the job (or fleet job) of a failed, timed-out or aborted execution
/// failed, and releases a job's lock.
async fn execution_ended(app: &App, event: &Value) -> Result<Outcome, TriggerError> {
    let detail = &event["detail"];
    let status = detail["status"].as_str().unwrap_or_default();
    if !matches!(status, "FAILED" | "TIMED_OUT" | "ABORTED") {
        return Ok(Outcome { skipped: vec![format!("execution status {status}")], ..Outcome::default() });
    }
    let text = detail["input"].as_str().unwrap_or_default();
    let input = match serde_json::from_str::<FleetInput>(text) {
        Ok(fleet) => return fleet_execution_ended(app, detail, status, fleet).await,
        Err(_) => serde_json::from_str::<ExecutionInput>(text),
    };
    let input = input.map_err(|e| TriggerError::Malformed(format!("the execution's input is not a dbroles job: {e}")))?;
    let message = ended(detail, status);
    let repaired = jobs::repair(app.deps.jobs.as_ref(), &input, &message, &app.deps.settings).await?;
    Ok(match repaired {
        true => Outcome { repaired: vec![input.job_id], ..Outcome::default() },
        false => Outcome { skipped: vec![format!("job {} had finished", input.job_id)], ..Outcome::default() },
    })
}

async fn fleet_execution_ended(app: &App, detail: &Value, status: &str, input: FleetInput) -> Result<Outcome, TriggerError> {
    let repaired = fleet::repair(&app.deps, &input, &ended(detail, status)).await?;
    Ok(match repaired {
        true => Outcome { repaired: vec![input.fleet_job_id], ..Outcome::default() },
        false => Outcome { skipped: vec![format!("fleet job {} had finished", input.fleet_job_id)], ..Outcome::default() },
    })
}

/// How an execution ended, as the job's message says it.
fn ended(detail: &Value, status: &str) -> String {
    let why = [detail["error"].as_str(), detail["cause"].as_str()].into_iter().flatten().collect::<Vec<_>>().join(": ");
    match why.is_empty() {
        true => format!("the execution ended {status}"),
        false => format!("the execution ended {status}: {why}"),
    }
}
