//! The job, exactly as seeds 000/001 show it, and the record the store keeps.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::request::CreateJobRequest;
use super::Timestamp;

/// `running`, `failed` or `completed`: the phase of a job and the status of one role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Running,
    Failed,
    Completed,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Running, Phase::Failed, Phase::Completed];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::Failed => "failed",
            Phase::Completed => "completed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|phase| phase.as_str() == text)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DbTag {
    pub key: String,
    pub value: String,
}

/// `openapi.AWSDBRoleJobSpec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobSpec {
    pub account_arn: String,
    pub db_arn: String,
    pub db_engine: String,
    pub db_name: String,
    pub db_tags: Vec<DbTag>,
}

/// Where a role's credentials were stored. The seed names `database` and
/// `vault`; dbroles adds `aws-secrets-manager`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SecretsProvider {
    Database,
    Vault,
    AwsSecretsManager,
}

impl SecretsProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretsProvider::Database => "database",
            SecretsProvider::Vault => "vault",
            SecretsProvider::AwsSecretsManager => "aws-secrets-manager",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Database, Self::Vault, Self::AwsSecretsManager].into_iter().find(|provider| provider.as_str() == text)
    }
}

/// `openapi.DBRoleJobStatusResultCredentialsInfo`: where the secret is, never what it is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CredentialsInfo {
    /// Empty for the `database` provider.
    pub secret_id: String,
    /// Empty for the `database` provider.
    pub secret_keys: Vec<String>,
    pub secrets_manager_provider: SecretsProvider,
}

/// `openapi.DBRoleJobStatusResult`: the outcome for one role.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RoleResult {
    pub completed_at: Timestamp,
    pub credentials_info: Option<CredentialsInfo>,
    pub message: String,
    pub status: Phase,
    pub user_role: String,
    /// Added by dbroles, under the alternating rotation: the login the stored
    /// credentials name now (`user_role` or `<user_role>_alt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_login: Option<String>,
    /// Added by dbroles, in mode `plan`: what a run would change on the role,
    /// revocations first (`revoke INSERT on table app.public.t (not in level ro)`,
    /// `grant SELECT on table app.public.items`, `create role p_ro`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<Vec<String>>,
    /// Added by dbroles: what the role holds beyond its level that the master
    /// may not revoke, and who granted it. Listed by a plan and by a run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_revocable: Vec<String>,
}

/// `openapi.DBRoleJobStatus`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobStatus {
    pub message: String,
    pub phase: Phase,
    pub result: Vec<RoleResult>,
}

/// `openapi.DBRoleJobHookStatus`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HookStatus {
    pub execution_time_sec: i64,
    pub exit_code: i64,
    pub output: String,
}

/// Added by dbroles: the outcome of the `send-webhook` step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookStatus {
    pub delivered: bool,
    pub attempts: u32,
    pub status_code: Option<u16>,
    pub message: String,
}

/// `openapi.DBRoleJob`: what `GET /dbroles/jobs/{id}` returns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Job {
    /// Null while the job runs.
    pub completed_at: Option<Timestamp>,
    pub created_at: Timestamp,
    /// Null unless the deployment has a hook and it ran.
    pub hook_status: Option<HookStatus>,
    pub id: String,
    pub org_id: String,
    pub spec: Option<JobSpec>,
    /// Null if not started.
    pub status: Option<JobStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_status: Option<WebhookStatus>,
    /// Added by dbroles: the fleet job this job is one instance of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet_job_id: Option<String>,
    /// Added by dbroles: `true` when a user cancelled the job (the seed's phase
    /// has no cancelled state: a cancel sets `failed`). Absent otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
}

impl Job {
    pub fn phase(&self) -> Phase {
        self.status.as_ref().map_or(Phase::Running, |status| status.phase)
    }

    pub fn db_arn(&self) -> &str {
        self.spec.as_ref().map_or("", |spec| spec.db_arn.as_str())
    }

    pub fn db_engine(&self) -> &str {
        self.spec.as_ref().map_or("", |spec| spec.db_engine.as_str())
    }
}

/// What the store keeps for a job: the public job and what only dbroles needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub job: Job,
    pub request: CreateJobRequest,
    /// The `sub` of whoever (or whichever rule) started the job.
    pub created_by: String,
    /// The workflow execution carrying the job out, once started.
    pub execution: Option<String>,
    /// The database server the job holds: the instance's ARN, or its Aurora cluster's.
    #[serde(default)]
    pub lock: String,
    /// How the steps reach the instance's account for the job's organisation.
    #[serde(default)]
    pub access: Option<crate::model::account::Access>,
    /// The immutable id of the server the job was created for: a step that finds
    /// another under the same ARN (deleted and created again) stops.
    #[serde(default)]
    pub resource_id: Option<String>,
    /// The instance's endpoint host, once the job found it: credentials kept in
    /// Vault are keyed by it.
    #[serde(default)]
    pub endpoint_host: Option<String>,
}

impl JobRecord {
    pub fn id(&self) -> &str {
        &self.job.id
    }

    pub fn org(&self) -> &str {
        &self.job.org_id
    }

    pub fn is_running(&self) -> bool {
        self.job.phase() == Phase::Running
    }

    /// The database server whose lock the job holds.
    pub fn lock_key(&self) -> &str {
        match self.lock.as_str() {
            "" => self.job.db_arn(),
            server => server,
        }
    }

    /// Ends the job: the phase, the message and `completed_at`, keeping the role results.
    pub fn finish(&mut self, phase: Phase, message: impl Into<String>) {
        let result = self.job.status.take().map(|status| status.result).unwrap_or_default();
        self.job.status = Some(JobStatus { message: message.into(), phase, result });
        self.job.completed_at = Some(Timestamp::now());
    }
}
