//! Provisioning one instance: its master credentials, new passwords staged in the
//! secret store, the roles and grants applied, a login as each role, then the
//! passwords confirmed.

use crate::config::Settings;
use crate::engine::{self, DbError, Family, Level, Report, RoleSpec, Target};
use crate::inventory::{Instance, Inventory, InventoryError};
use crate::job::{Phase, RoleResult, Timestamp};
use crate::request::{InstanceArn, Invalid};
use crate::secrets::{RoleCredentials, SecretError, SecretRef, SecretStore};

/// Where the credentials say the database is: the instance's real endpoint,
/// even when dbroles itself connects through an override.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub db: String,
    pub engine: String,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProvisionError {
    /// Nothing changed in the database.
    #[error("storing the new credentials failed before any change to the database: {0}")]
    SecretStore(SecretError),
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error("the instance {0} was not found")]
    InstanceNotFound(String),
    #[error("{}", engine::unsupported(.0))]
    UnsupportedEngine(String),
    #[error(transparent)]
    InvalidPrefix(Invalid),
}

pub struct Outcome {
    pub results: Vec<RoleResult>,
    pub report: Report,
}

impl Outcome {
    pub fn all_completed(&self) -> bool {
        self.results.iter().all(|result| result.status == Phase::Completed)
    }
}

pub async fn provision_roles(
    target: &Target,
    endpoint: &Endpoint,
    prefix: &str,
    secrets: &dyn SecretStore,
    secret_ref: &SecretRef,
) -> Result<Outcome, ProvisionError> {
    let roles: Vec<RoleSpec> = Level::ALL.iter().map(|level| RoleSpec::new(prefix, *level)).collect();
    let refs: Vec<SecretRef> = roles.iter().map(|role| SecretRef { user: role.user.clone(), ..secret_ref.clone() }).collect();

    let mut staged = Vec::new();
    for (role, secret) in roles.iter().zip(&refs) {
        let credentials = RoleCredentials {
            host: endpoint.host.clone(),
            port: endpoint.port,
            user: role.user.clone(),
            password: role.password.clone(),
            db: endpoint.db.clone(),
            engine: endpoint.engine.clone(),
        };
        let handle = secrets.stage(secret, &credentials).await.map_err(ProvisionError::SecretStore)?;
        staged.push(handle);
    }

    let report = engine::provision(target, &roles).await?;

    let mut results = Vec::new();
    for ((role, outcome), (secret, handle)) in roles.iter().zip(&report.outcomes).zip(refs.iter().zip(&staged)) {
        let result = match &outcome.result {
            Err(error) => Err(error.message.clone()),
            Ok(()) => match engine::check_login(target, &role.user, &role.password).await {
                Err(DbError { message, .. }) => Err(format!("the new password did not log in: {message}")),
                Ok(()) => secrets.confirm(handle).await.map_err(|e| format!("the password works but confirming it failed: {e}")),
            },
        };
        let (status, message) = match result {
            Ok(()) => (Phase::Completed, format!("role {} provisioned in {} database(s)", role.user, report.databases.len())),
            Err(message) => (Phase::Failed, message),
        };
        results.push(RoleResult {
            completed_at: Timestamp::now(),
            credentials_info: Some(secrets.info(secret)),
            message,
            status,
            user_role: role.user.clone(),
        });
    }
    Ok(Outcome { results, report })
}

/// Provisions the roles on the instance `arn` names: each role's result, or why none could be.
pub async fn provision_instance(
    arn: &InstanceArn,
    job_id: &str,
    inventory: &dyn Inventory,
    secrets: &dyn SecretStore,
    settings: &Settings,
) -> Result<Vec<RoleResult>, ProvisionError> {
    let instance = inventory.describe(arn).await?.ok_or_else(|| ProvisionError::InstanceNotFound(arn.to_string()))?;
    let family = Family::of(&instance.engine).ok_or_else(|| ProvisionError::UnsupportedEngine(instance.engine.clone()))?;
    engine::validate_prefix(&settings.role_prefix, &instance.engine).map_err(ProvisionError::InvalidPrefix)?;
    let master = inventory.master_credentials(&instance).await?;
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
    let secret_ref = SecretRef {
        instance_id: instance.identifier.clone(),
        instance_arn: instance.arn.clone(),
        job_id: job_id.to_string(),
        user: String::new(),
        host: instance.endpoint_host.clone(),
    };
    let outcome = provision_roles(&target, &endpoint_of(&instance, family), &settings.role_prefix, secrets, &secret_ref).await?;
    Ok(outcome.results)
}

/// What the credentials name: the instance's own endpoint and its default database.
fn endpoint_of(instance: &Instance, family: Family) -> Endpoint {
    let db = match (family, instance.db_name.as_str()) {
        (_, name) if !name.is_empty() => name.to_string(),
        (Family::Postgres, _) => "postgres".to_string(),
        (Family::MySql, _) => String::new(),
    };
    Endpoint { host: instance.endpoint_host.clone(), port: instance.endpoint_port, db, engine: instance.engine.clone() }
}
