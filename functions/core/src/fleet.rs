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
//! | forgotten | [`delete`] | `DELETE /dbroles/fleet-jobs/{id}` |

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::accounts::{self, Access, AccountError};
use crate::deps::{App, Deps};
use crate::inventory::{InventoryError, Listed};
use crate::job::{Job, Phase, Timestamp};
use crate::jobs::{self, JobError, Naming};
use crate::request::{
    parse_lenient, validate_agent_id, validate_name, validate_security_group, AwsRequest, CreateJobRequest, InstanceArn, Invalid,
    JobStep, Lenient, SecurityGroupRequest, VaultPath, VaultRequest,
};
use crate::store::{JobQuery, Page, StoreError};
use crate::workflow::{execution_arn, WorkflowError};

/// The most instances one fleet job takes: the list travels in the execution's
/// state, which Step Functions bounds at 256 KB.
pub const MAX_INSTANCES: usize = 2_000;

/// The engines dbroles provisions, as RDS names them.
pub const ENGINES: [&str; 5] = ["postgres", "aurora-postgresql", "mysql", "mariadb", "aurora-mysql"];

/// Which instances a fleet job covers. Every list narrows the selection; an
/// empty one narrows nothing (the deployment's own region for `regions`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Selector {
    /// The organisation's AWS accounts to look in; empty: every account it may use.
    #[serde(default)]
    #[schema(nullable, example = json!(["123456789012"]), inline, value_type = Option<Vec<AccountId>>)]
    pub accounts: Vec<String>,
    /// Empty: the deployment's own region.
    #[serde(default)]
    #[schema(nullable, example = json!(["us-east-1", "eu-west-1"]), inline, value_type = Option<Vec<Region>>)]
    pub regions: Vec<String>,
    /// RDS engine names: postgres, aurora-postgresql, mysql, mariadb, aurora-mysql.
    #[serde(default)]
    #[schema(nullable, example = json!(["postgres", "aurora-postgresql"]), inline, value_type = Option<Vec<Engine>>)]
    pub engines: Vec<String>,
    /// `key=value` (the tag has that value) or `key` (the tag is present); all must hold.
    #[serde(default)]
    #[schema(nullable, example = json!(["environment=production", "team"]), inline, value_type = Option<Vec<TagFilter>>)]
    pub tags: Vec<String>,
    /// Only the instances dbroles has provisioned for the organisation, each with
    /// the request of its last job (the rotation schedule's selector).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[schema(nullable)]
    pub provisioned: bool,
}

/// A 12-digit AWS account id.
#[derive(ToSchema)]
#[schema(pattern = "^[0-9]{12}$", example = "123456789012")]
#[allow(dead_code)]
struct AccountId(String);

/// An AWS region such as us-east-1.
#[derive(ToSchema)]
#[schema(pattern = "^[a-z0-9]+(-[a-z0-9]+){2,}$", example = "us-east-1")]
#[allow(dead_code)]
struct Region(String);

/// An RDS engine dbroles provisions.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "kebab-case")]
enum Engine {
    Postgres,
    AuroraPostgresql,
    Mysql,
    Mariadb,
    AuroraMysql,
}

/// `key=value` or `key`.
#[derive(ToSchema)]
#[schema(pattern = "^[^=]*[^=\\s][^=]*(=[\\s\\S]*)?$", example = "environment=production")]
#[allow(dead_code)]
struct TagFilter(String);

/// What every instance's job does, as the fields of a job request say it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FleetAwsOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable)]
    pub default_security_group: Option<SecurityGroupRequest>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[schema(nullable)]
    pub allow_master_password_reset: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[schema(nullable)]
    pub adopt_existing_roles: bool,
}

/// `POST /dbroles/fleet-jobs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreateFleetJobRequest {
    pub selector: Selector,
    #[schema(
        example = "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub agent_id: String,
    /// Each instance's connections are named `<connection_prefix_name><instance id>-<level>`.
    #[serde(default)]
    #[schema(nullable, example = "prod-", pattern = "^[A-Za-z0-9._-]{0,32}$")]
    pub connection_prefix_name: String,
    #[serde(default)]
    #[schema(nullable)]
    pub job_steps: Vec<JobStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable)]
    pub vault_provider: Option<VaultRequest>,
    #[serde(default)]
    #[schema(nullable)]
    pub aws: FleetAwsOptions,
    /// How many instances are provisioned at once (the Map's `MaxConcurrency`): 1 to 1,000.
    #[serde(default = "default_concurrency", deserialize_with = "concurrency")]
    #[schema(nullable, minimum = 1, maximum = 1000, default = 8)]
    pub max_concurrency: u32,
    /// The share of instances that may fail before the rest are given up
    /// (the Map's `ToleratedFailurePercentage`): 0 to 100; 100 finishes every instance.
    #[serde(default = "default_tolerance")]
    #[schema(nullable, minimum = 0, maximum = 100, default = 100)]
    pub tolerated_failure_percentage: f64,
}

fn default_concurrency() -> u32 {
    8
}

/// A whole number of instances, also written `8.0`; its range is checked by `validate`.
fn concurrency<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let number = crate::request::whole_number(deserializer)?.unwrap_or(default_concurrency() as i64);
    Ok(u32::try_from(number).unwrap_or(0))
}

fn default_tolerance() -> f64 {
    100.0
}

/// `202` to `POST /dbroles/fleet-jobs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreateFleetJobResponse {
    pub fleet_job_id: String,
}

impl CreateFleetJobRequest {
    pub fn parse(body: &[u8]) -> Result<Lenient<Self>, Invalid> {
        let request: Lenient<Self> = parse_lenient(body)?;
        request.value.validate()?;
        Ok(request)
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        validate_agent_id(&self.agent_id)?;
        for account in &self.selector.accounts {
            accounts::validate_account_id(account).map_err(|e| Invalid(format!("selector.accounts: {e}")))?;
        }
        for region in &self.selector.regions {
            let parts: Vec<&str> = region.split('-').collect();
            let ok = parts.len() >= 3
                && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
            if !ok {
                return Err(Invalid(format!("selector.regions: '{region}' is not a region such as us-east-1")));
            }
        }
        for engine in &self.selector.engines {
            if !ENGINES.contains(&engine.as_str()) {
                return Err(Invalid(format!("selector.engines: '{engine}' is not one of {}", ENGINES.join(", "))));
            }
        }
        for tag in &self.selector.tags {
            if tag.split('=').next().is_none_or(|key| key.trim().is_empty()) {
                return Err(Invalid(format!("selector.tags: '{tag}' is not key=value or key")));
            }
        }
        if !self.connection_prefix_name.is_empty() {
            validate_name("connection_prefix_name", &self.connection_prefix_name, 32)?;
        }
        if let Some(vault) = &self.vault_provider {
            VaultPath::parse(&vault.secret_id)?;
        }
        validate_security_group(self.aws.default_security_group.as_ref())?;
        if !(1..=1000).contains(&self.max_concurrency) {
            return Err(Invalid("max_concurrency: must be 1 to 1000".into()));
        }
        if !(0.0..=100.0).contains(&self.tolerated_failure_percentage) {
            return Err(Invalid("tolerated_failure_percentage: must be 0 to 100".into()));
        }
        Ok(())
    }

    /// The job request of one instance.
    fn job_request(&self, arn: &InstanceArn) -> CreateJobRequest {
        CreateJobRequest {
            agent_id: self.agent_id.clone(),
            aws: AwsRequest {
                instance_arn: arn.to_string(),
                default_security_group: self.aws.default_security_group.clone(),
                allow_master_password_reset: self.aws.allow_master_password_reset,
                adopt_existing_roles: self.aws.adopt_existing_roles,
            },
            connection_prefix_name: format!("{}{}-", self.connection_prefix_name, arn.id),
            job_steps: self.job_steps.clone(),
            vault_provider: self.vault_provider.clone(),
        }
    }
}

/// How many of a fleet's instances are where.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FleetCounts {
    /// The instances the selector matched.
    pub total: u64,
    /// Not started yet.
    pub pending: u64,
    pub running: u64,
    pub completed: u64,
    pub failed: u64,
    /// Held by another running job when their turn came, so not started.
    pub skipped: u64,
}

/// An instance the fleet job started no job for, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NotStarted {
    pub instance_arn: String,
    /// `true`: another job held the database server (counted as skipped);
    /// `false`: the job could not be created (counted as failed).
    pub skipped: bool,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FleetStatus {
    pub phase: Phase,
    pub message: String,
    pub counts: FleetCounts,
    /// The instances that got no job.
    pub not_started: Vec<NotStarted>,
    /// `true` when a user cancelled the fleet job (its phase is then `failed`). Absent otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
}

/// A fleet job, as `GET /dbroles/fleet-jobs/{id}` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FleetJob {
    pub id: String,
    pub org_id: String,
    pub created_at: Timestamp,
    /// Null while the fleet job runs.
    pub completed_at: Option<Timestamp>,
    pub created_by: String,
    pub request: CreateFleetJobRequest,
    pub status: FleetStatus,
}

/// What the store keeps for a fleet job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetRecord {
    pub fleet: FleetJob,
    pub execution: Option<String>,
    /// The instances the selector matched, once resolved.
    #[serde(default)]
    pub selected: Option<Vec<String>>,
}

impl FleetRecord {
    pub fn id(&self) -> &str {
        &self.fleet.id
    }

    pub fn org(&self) -> &str {
        &self.fleet.org_id
    }

    pub fn is_running(&self) -> bool {
        self.fleet.status.phase == Phase::Running
    }

    fn finish(&mut self, phase: Phase, message: String, counts: FleetCounts) {
        let not_started = std::mem::take(&mut self.fleet.status.not_started);
        self.fleet.status = FleetStatus { phase, message, counts, not_started, cancelled: false };
        self.fleet.completed_at = Some(Timestamp::now());
    }
}

/// What a fleet job's execution starts from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetInput {
    pub org_id: String,
    pub fleet_job_id: String,
}

impl FleetInput {
    pub fn of(record: &FleetRecord) -> Self {
        Self { org_id: record.org().to_string(), fleet_job_id: record.id().to_string() }
    }
}

/// What the fleet-select step hands the Map: the instances, and its bounds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    pub org_id: String,
    pub fleet_job_id: String,
    pub instances: Vec<String>,
    pub max_concurrency: u32,
    pub tolerated_failure_percentage: f64,
}

/// One Map item, as the Map's `ItemSelector` builds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChildInput {
    pub org_id: String,
    pub fleet_job_id: String,
    pub instance_arn: String,
}

/// What became of one Map item: `started` (then `job_id` names the job), `skipped` or `failed`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChildOutcome {
    pub org_id: String,
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

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
}

/// Stores a fleet job and starts its execution: its id. The accounts it names
/// must all be usable by the organisation; nothing is stored otherwise.
#[tracing::instrument(skip_all, fields(org = %org, fleet_job_id = tracing::field::Empty))]
pub async fn start(app: &App, org: &str, created_by: &str, request: CreateFleetJobRequest) -> Result<String, FleetError> {
    if let Some(vault) = &request.vault_provider {
        let policy = app.settings.vault.as_ref().ok_or_else(|| {
            Invalid("vault_provider: this deployment has no Vault; leave vault_provider out to use its store".into())
        })?;
        policy.path_for(org, &vault.secret_id)?;
    }
    for account in &request.selector.accounts {
        accounts::access(app, org, account).await?;
    }
    jobs::within_share(app, org, request.max_concurrency as usize).await?;
    let id = crate::job::new_id();
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
    app.fleets.create_fleet(&record).await?;
    match app.workflow.start_fleet(&record).await {
        Ok(()) => Ok(record.fleet.id),
        Err(source) => {
            record.finish(Phase::Failed, format!("the workflow could not be started: {source}"), FleetCounts::default());
            app.fleets.finish_fleet(&record, app.settings.expiry()).await?;
            Err(FleetError::NotStarted { fleet_job_id: record.fleet.id, source })
        }
    }
}

/// One fleet job of the organisation, its counts up to date.
pub async fn find(deps: &Deps, org: &str, id: &str) -> Result<FleetJob, FleetError> {
    let record = deps.fleets.get_fleet(org, id).await?.ok_or_else(|| FleetError::NotFound(id.to_string()))?;
    with_counts(deps, record).await
}

/// The organisation's fleet jobs, newest first, their counts up to date.
pub async fn list(deps: &Deps, org: &str, limit: usize, next_token: Option<&str>) -> Result<Page<FleetJob>, FleetError> {
    let page = deps.fleets.list_fleets(org, limit, next_token).await?;
    let mut items = Vec::with_capacity(page.items.len());
    for record in page.items {
        items.push(with_counts(deps, record).await?);
    }
    Ok(Page { items, next_token: page.next_token })
}

/// A page of the fleet job's own jobs, newest first.
pub async fn children(
    deps: &Deps,
    org: &str,
    id: &str,
    limit: usize,
    next_token: Option<String>,
) -> Result<Page<Job>, FleetError> {
    let query = JobQuery { fleet_job_id: Some(id.to_string()), limit, next_token, ..JobQuery::default() };
    Ok(deps.jobs.list_jobs(org, &query).await?)
}

/// A running fleet job's counts are read from its jobs; a finished one's were kept when it finished.
async fn with_counts(deps: &Deps, record: FleetRecord) -> Result<FleetJob, FleetError> {
    let mut fleet = record.fleet.clone();
    if record.is_running() {
        fleet.status.counts = counts(deps, &record).await?;
    }
    Ok(fleet)
}

async fn counts(deps: &Deps, record: &FleetRecord) -> Result<FleetCounts, StoreError> {
    let count = |phase| {
        let query = JobQuery { fleet_job_id: Some(record.id().to_string()), phase: Some(phase), ..JobQuery::default() };
        async move { deps.jobs.count_jobs(record.org(), &query).await }
    };
    let (running, completed, failed) =
        (count(Phase::Running).await?, count(Phase::Completed).await?, count(Phase::Failed).await?);
    let not_started = &record.fleet.status.not_started;
    let skipped = not_started.iter().filter(|n| n.skipped).count() as u64;
    let failed = failed + not_started.iter().filter(|n| !n.skipped).count() as u64;
    let total = record.selected.as_ref().map_or(0, |selected| selected.len() as u64);
    let pending = total.saturating_sub(running + completed + failed + skipped);
    Ok(FleetCounts { total, pending, running, completed, failed, skipped })
}

fn tag_matches(listed: &Listed, wanted: &str) -> bool {
    match wanted.split_once('=') {
        Some((key, value)) => listed.tags.iter().any(|t| t.key == key.trim() && t.value == value.trim()),
        None => listed.tags.iter().any(|t| t.key == wanted.trim()),
    }
}

/// Every account the organisation may use: the deployment's own if it is named
/// for it, and those it registered.
async fn usable_accounts(deps: &Deps, org: &str) -> Result<Vec<String>, FleetError> {
    let mut usable: Vec<String> = deps.accounts.list_accounts(org).await?.into_iter().map(|a| a.account_id).collect();
    if deps.settings.accounts.allows_home(org) {
        usable.push(deps.inventory.home_account().await?);
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
        true => usable_accounts(deps, &org).await?,
        false => selector.accounts.clone(),
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
            let access: Access = accounts::access(deps, &org, account).await?;
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
    let (request, resource_id) = match record.fleet.request.selector.provisioned {
        true => provisioned_request(deps, record.org(), &input.instance_arn).await?,
        false => (record.fleet.request.job_request(&arn), None),
    };
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
    let counts = counts(deps, &record).await?;
    let mut message = format!(
        "{} instances: {} completed, {} failed, {} skipped",
        counts.total, counts.completed, counts.failed, counts.skipped
    );
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
    let mut record = app.fleets.get_fleet(org, id).await?.ok_or_else(|| FleetError::NotFound(id.to_string()))?;
    if !record.is_running() {
        return Err(FleetError::Finished(id.to_string()));
    }
    let counts = counts(app, &record).await?;
    let message = format!("cancelled by {by}");
    record.finish(Phase::Failed, message.clone(), counts);
    record.fleet.status.cancelled = true;
    if !app.fleets.finish_fleet(&record, app.settings.expiry()).await? {
        return Err(FleetError::Finished(id.to_string()));
    }
    if let Some(execution) = &record.execution {
        if let Err(error) = app.workflow.stop(execution, &message).await {
            tracing::warn!(fleet_job_id = id, %error, "the cancelled fleet job's execution could not be stopped");
        }
    }
    cancel_children(app, &record, by).await?;
    announce(app, &record.fleet).await;
    Ok(app.fleets.get_fleet(org, id).await?.map_or(record.fleet, |record| record.fleet))
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
        let page = app.jobs.list_jobs(record.org(), &query).await?;
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
    let counts = counts(deps, &record).await?;
    record.finish(Phase::Failed, message.to_string(), counts);
    let finished = deps.fleets.finish_fleet(&record, deps.settings.expiry()).await?;
    if finished {
        announce(deps, &record.fleet).await;
    }
    Ok(finished)
}

/// Forgets a finished fleet job (its jobs stay, each deleted on its own).
pub async fn delete(deps: &Deps, org: &str, id: &str) -> Result<(), FleetError> {
    deps.fleets.delete_fleet(org, id).await.map_err(|error| match error {
        StoreError::Running => FleetError::Running(id.to_string()),
        StoreError::NotFound => FleetError::NotFound(id.to_string()),
        other => other.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: serde_json::Value) -> Result<CreateFleetJobRequest, Invalid> {
        let request: CreateFleetJobRequest = serde_json::from_value(json).map_err(|e| Invalid(e.to_string()))?;
        request.validate().map(|_| request)
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
        ] {
            let error = request(body).unwrap_err().0;
            assert!(error.starts_with(field), "{field}: {error}");
        }
    }

    #[test]
    fn each_instance_gets_its_own_connection_names_and_a_stable_job_id() {
        let agent = "a1b2c3d4-e5f6-7890-abcd-ef1234567890";
        let fleet = request(serde_json::json!({"selector": {}, "agent_id": agent, "connection_prefix_name": "prod-"})).unwrap();
        let arn: InstanceArn = "arn:aws:rds:us-east-1:123456789012:db:orders".parse().unwrap();
        let job = fleet.job_request(&arn);
        assert_eq!(job.connection_prefix_name, "prod-orders-");
        job.validate().unwrap();
        assert_eq!(child_id("F1", arn.as_str()), child_id("F1", arn.as_str()));
        assert_ne!(child_id("F1", arn.as_str()), child_id("F2", arn.as_str()));
        assert_eq!(child_id("F1", arn.as_str()).len(), 36);
    }
}
