//! The fleet types: the request and its selector, the stored fleet job and its
//! counts, and what the fleet state machine's Map passes between its steps. The
//! fleet lifecycle lives in [`crate::lifecycle::fleet`].

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::job::Phase;
use super::request::{
    connection_bound, validate_max_db_connections, validate_name, validate_security_group, AwsRequest, CreateJobRequest,
    InstanceArn, Invalid, JobStep, Mode, Rotation, SecurityGroupRequest, Validated, VaultPath, VaultRequest,
};
use super::scope::Scope;
use super::Timestamp;
use super::{AccountId, AgentId};

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
    pub accounts: Vec<AccountId>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable)]
    pub rotation: Option<Rotation>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "connection_bound")]
    #[schema(nullable, minimum = 1, maximum = 32)]
    pub max_db_connections: Option<u32>,
}

impl FleetAwsOptions {
    /// The `aws` of one instance's job request.
    pub fn request_for(&self, instance_arn: String) -> AwsRequest {
        AwsRequest {
            instance_arn,
            default_security_group: self.default_security_group.clone(),
            allow_master_password_reset: self.allow_master_password_reset,
            adopt_existing_roles: self.adopt_existing_roles,
            rotation: self.rotation,
            max_db_connections: self.max_db_connections,
        }
    }
}

/// `POST /dbroles/fleet-jobs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreateFleetJobRequest {
    pub selector: Selector,
    pub agent_id: AgentId,
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
    /// Each instance's job: `run` (the default) or `revoke`.
    #[serde(default, skip_serializing_if = "Mode::is_run")]
    pub mode: Mode,
    /// Each instance's job's levels, databases and schemas; absent: all.
    #[serde(default, skip_serializing_if = "Scope::is_everything")]
    pub scope: Scope,
}

fn default_concurrency() -> u32 {
    8
}

/// A whole number of instances, also written `8.0`; its range is checked by `validate`.
fn concurrency<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let number = crate::model::request::whole_number(deserializer)?.unwrap_or(default_concurrency() as i64);
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

impl Validated for CreateFleetJobRequest {
    fn validate(&self) -> Result<(), Invalid> {
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
        validate_max_db_connections(self.aws.max_db_connections)?;
        self.scope.validate()?;
        if !(1..=1000).contains(&self.max_concurrency) {
            return Err(Invalid("max_concurrency: must be 1 to 1000".into()));
        }
        if !(0.0..=100.0).contains(&self.tolerated_failure_percentage) {
            return Err(Invalid("tolerated_failure_percentage: must be 0 to 100".into()));
        }
        Ok(())
    }
}

impl CreateFleetJobRequest {
    /// The job request of one instance.
    pub fn job_request(&self, arn: &InstanceArn) -> CreateJobRequest {
        CreateJobRequest {
            agent_id: self.agent_id.clone(),
            aws: self.aws.request_for(arn.to_string()),
            connection_prefix_name: format!("{}{}-", self.connection_prefix_name, arn.id),
            job_steps: self.job_steps.clone(),
            vault_provider: self.vault_provider.clone(),
            mode: self.mode,
            scope: self.scope.clone(),
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
    /// A plan's completed instances a run would not change (fleet jobs in mode `plan` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_sync: Option<u64>,
    /// A plan's completed instances a run would change (fleet jobs in mode `plan` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drifted: Option<u64>,
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

    pub fn finish(&mut self, phase: Phase, message: String, counts: FleetCounts) {
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
