//! Provisioning one instance: new passwords staged in the secret store, the roles
//! and grants applied, a login as each role, then the passwords confirmed.

use crate::engine::{self, Level, Report, RoleSpec, Target};
use crate::job::{Phase, RoleResult, Timestamp};
use crate::secrets::{RoleCredentials, SecretRef, SecretStore};

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
    SecretStore(String),
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
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
        let handle = secrets.stage(secret, &credentials).await.map_err(|e| ProvisionError::SecretStore(e.to_string()))?;
        staged.push(handle);
    }

    let report = engine::provision(target, &roles).await?;

    let mut results = Vec::new();
    for ((role, outcome), (secret, handle)) in roles.iter().zip(&report.outcomes).zip(refs.iter().zip(&staged)) {
        let result = match &outcome.result {
            Err(message) => Err(message.clone()),
            Ok(()) => match engine::check_login(target, &role.user, &role.password).await {
                Err(message) => Err(format!("the new password did not log in: {message}")),
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
