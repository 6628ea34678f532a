//! The `SecretStore` port: where each role's credentials go. Adapters: AWS Secrets
//! Manager, HashiCorp Vault KV v2, and dbroles' own store (`database`).
//!
//! A password is *staged* before the database changes and *confirmed* after a
//! test login as the role, so a failure never leaves a password nobody holds.

pub mod aws;
pub mod database;
pub mod kms;
pub mod vault;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::model::job::{CredentialsInfo, SecretsProvider};

/// The keys every stored credential has (seed 001's `secret_keys`).
pub const SECRET_KEYS: [&str; 5] = ["HOST", "PORT", "USER", "PASSWORD", "DB"];

/// A role's credentials. `Debug` never shows the password.
#[derive(Clone, Debug)]
pub struct RoleCredentials {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: SecretString,
    pub db: String,
    pub engine: String,
    /// Under the alternating rotation, every login of the level (both are
    /// dbroles', also the one `user` does not name now): MySQL and MariaDB have
    /// no other place to mark a user as dbroles'.
    pub logins: Vec<String>,
}

/// A secret's JSON as stored: the seed's keys, the engine, and the level's logins.
#[derive(Serialize, Deserialize)]
struct SecretJson {
    #[serde(rename = "HOST")]
    host: String,
    #[serde(rename = "PORT")]
    port: String,
    #[serde(rename = "USER")]
    user: String,
    #[serde(rename = "PASSWORD")]
    password: String,
    #[serde(rename = "DB")]
    db: String,
    #[serde(rename = "ENGINE", default)]
    engine: String,
    /// Comma-separated; absent under the single rotation.
    #[serde(rename = "LOGINS", default, skip_serializing_if = "String::is_empty")]
    logins: String,
}

impl RoleCredentials {
    /// The JSON document stored for a role. It holds the password: never log it.
    pub fn to_secret_json(&self) -> SecretString {
        let stored = SecretJson {
            host: self.host.clone(),
            port: self.port.to_string(),
            user: self.user.clone(),
            password: self.password.expose_secret().to_string(),
            db: self.db.clone(),
            engine: self.engine.clone(),
            logins: self.logins.join(","),
        };
        SecretString::from(serde_json::to_string(&stored).expect("credentials serialise"))
    }

    pub fn from_secret_json(text: &str) -> Result<Self, SecretError> {
        let stored: SecretJson =
            serde_json::from_str(text).map_err(|_| SecretError::Failed("a stored credential is not the expected JSON".into()))?;
        Ok(Self {
            host: stored.host,
            port: stored.port.parse().unwrap_or(0),
            user: stored.user,
            password: SecretString::from(stored.password),
            db: stored.db,
            engine: stored.engine,
            logins: stored.logins.split(',').filter(|login| !login.is_empty()).map(str::to_string).collect(),
        })
    }

    /// Whether these credentials name `login` as one of the level's, now or as its other login.
    pub fn names(&self, login: &str) -> bool {
        self.user == login || self.logins.iter().any(|name| name == login)
    }
}

/// Which secret a role's credentials live in: one per role of a database server
/// (an Aurora cluster and its instances share them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRef {
    /// The organisation whose job writes it: dbroles' own store is keyed by it.
    pub org: String,
    /// The server's identifier and ARN (the cluster's for an Aurora instance).
    pub instance_id: String,
    pub instance_arn: String,
    pub job_id: String,
    pub user: String,
    pub host: String,
}

impl SecretRef {
    /// Where a job of `org` keeps the roles of `instance` (`user` to fill in per role).
    pub fn for_instance(instance: &crate::inventory::Instance, org: &str, job_id: &str) -> Self {
        let server = instance.server_arn();
        let id = server.parse::<crate::model::request::InstanceArn>().map_or_else(|_| instance.identifier.clone(), |arn| arn.id);
        Self {
            org: org.to_string(),
            instance_id: id,
            instance_arn: server.to_string(),
            job_id: job_id.to_string(),
            user: String::new(),
            host: instance.endpoint_host.clone(),
        }
    }
}

/// A staged credential, to confirm after the login test.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staged {
    pub secret_id: String,
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SecretError {
    #[error("access denied by the secret store: {0}")]
    AccessDenied(String),
    /// Worth another attempt: throttling, a 5xx, a time-out, no connection.
    #[error("the secret store is unavailable: {0}")]
    Unavailable(String),
    #[error("the secret store failed: {0}")]
    Failed(String),
    /// A secret of that name exists and dbroles did not create it: it is not written.
    #[error("{0} exists and was not created by dbroles (it lacks the tag dbroles:managed=true): dbroles does not write into it")]
    NotOurs(String),
}

impl SecretError {
    pub fn is_transient(&self) -> bool {
        matches!(self, SecretError::Unavailable(_))
    }
}

#[async_trait]
pub trait SecretStore: Send + Sync {
    fn provider(&self) -> SecretsProvider;
    /// The secret id of a role's credentials (as `credentials_info` shows it).
    fn secret_id(&self, secret: &SecretRef) -> String;
    /// Writes new credentials without making them current.
    async fn stage(&self, secret: &SecretRef, credentials: &RoleCredentials) -> Result<Staged, SecretError>;
    /// Makes staged credentials the current ones.
    async fn confirm(&self, staged: &Staged) -> Result<(), SecretError>;
    /// The current credentials (for the operator's `dbroles credentials`).
    async fn read(&self, secret_id: &str) -> Result<Option<RoleCredentials>, SecretError>;
    /// The credentials current before the last confirmation: a consumer's fallback
    /// (under the alternating rotation they log in until the next run). A store
    /// that keeps no history has none.
    async fn previous(&self, _secret_id: &str) -> Result<Option<RoleCredentials>, SecretError> {
        Ok(None)
    }
    /// Removes a role's credentials, current, staged and previous, when the role is retired.
    async fn delete(&self, secret_id: &str) -> Result<(), SecretError>;
    /// Staged credentials newer than the current ones: a run cut short between
    /// staging and confirming. The next run tries them, and confirms them if they log in.
    async fn pending(&self, _secret_id: &str) -> Result<Option<(Staged, RoleCredentials)>, SecretError> {
        Ok(None)
    }

    /// `credentials_info` for a job result, as seed 001 describes it.
    fn info(&self, secret: &SecretRef) -> CredentialsInfo {
        match self.provider() {
            SecretsProvider::Database => CredentialsInfo {
                secret_id: String::new(),
                secret_keys: Vec::new(),
                secrets_manager_provider: SecretsProvider::Database,
            },
            provider => CredentialsInfo {
                secret_id: self.secret_id(secret),
                secret_keys: SECRET_KEYS.iter().map(|key| key.to_string()).collect(),
                secrets_manager_provider: provider,
            },
        }
    }
}
