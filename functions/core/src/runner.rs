//! Carrying out one job: the instance, its master credentials, the roles, the
//! final status. The workflow's steps call these.

use std::time::Duration;

use crate::engine::{self, Family, Target, TlsConfig};
use crate::inventory::{Instance, Inventory};
use crate::job::{JobRecord, JobSpec, JobStatus, Phase, RoleResult, Timestamp};
use crate::provision::{provision_roles, Endpoint};
use crate::secrets::{SecretRef, SecretStore};

/// How a deployment provisions: its role prefix, TLS and time limits.
#[derive(Clone, Debug)]
pub struct Settings {
    pub role_prefix: String,
    pub tls: TlsConfig,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    pub concurrency: usize,
    /// How long finished jobs are kept.
    pub retention: chrono::Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            role_prefix: "hoop".into(),
            tls: TlsConfig::default(),
            connect_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(60),
            concurrency: 4,
            retention: chrono::Duration::days(90),
        }
    }
}

impl Settings {
    /// When a job finished now is forgotten.
    pub fn expiry(&self) -> Timestamp {
        Timestamp(Timestamp::now().0 + self.retention)
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
pub fn new_record(org: &str, created_by: &str, request: crate::request::CreateJobRequest, spec: JobSpec) -> JobRecord {
    JobRecord {
        job: crate::job::Job {
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

/// Provisions the roles of a job on its instance: each role's result, or why none could be.
pub async fn provision_roles_of(
    record: &JobRecord,
    inventory: &dyn Inventory,
    secrets: &dyn SecretStore,
    settings: &Settings,
) -> Result<Vec<RoleResult>, String> {
    let arn = record.request.instance_arn();
    let instance =
        inventory.describe(&arn).await.map_err(|e| e.to_string())?.ok_or_else(|| format!("the instance {arn} was not found"))?;
    let family = Family::of(&instance.engine).ok_or_else(|| engine::unsupported(&instance.engine))?;
    engine::validate_prefix(&settings.role_prefix, &instance.engine).map_err(|e| e.0)?;
    let master = inventory.master_credentials(&instance).await.map_err(|e| e.to_string())?;
    let target = Target {
        family,
        host: instance.host.clone(),
        port: instance.port,
        master_user: master.user,
        master_password: master.password,
        tls: settings.tls.clone(),
        connect_timeout: settings.connect_timeout,
        statement_timeout: settings.statement_timeout,
        concurrency: settings.concurrency,
    };
    let default_db = match (family, instance.db_name.as_str()) {
        (_, name) if !name.is_empty() => name.to_string(),
        (Family::Postgres, _) => "postgres".to_string(),
        (Family::MySql, _) => String::new(),
    };
    let endpoint = Endpoint {
        host: instance.endpoint_host.clone(),
        port: instance.endpoint_port,
        db: default_db,
        engine: instance.engine.clone(),
    };
    let secret_ref = SecretRef {
        instance_id: instance.identifier.clone(),
        instance_arn: instance.arn.clone(),
        job_id: record.id().to_string(),
        user: String::new(),
        host: instance.endpoint_host.clone(),
    };
    let outcome =
        provision_roles(&target, &endpoint, &settings.role_prefix, secrets, &secret_ref).await.map_err(|e| e.to_string())?;
    Ok(outcome.results)
}
