//! A deployment's configuration, read from the environment the SAM template sets.
//!
//! | variable | default | what |
//! | --- | --- | --- |
//! | `DBROLES_TABLE` | (required) | the DynamoDB table |
//! | `DBROLES_STATE_MACHINE_ARN` | (the API needs it) | the provisioning state machine; fleet-start-job names its executions by it |
//! | `DBROLES_ORG_CLAIM` | `org_id` | the JWT claim naming the caller's organisation |
//! | `DBROLES_ROLE_PREFIX` | `hoop` | roles are `<prefix>_ro`, `_rw`, `_ddl` |
//! | `DBROLES_RETENTION_DAYS` | `90` | how long finished jobs are kept |
//! | `DBROLES_CREDENTIALS_STORE` | `database` | where credentials go when a job names no Vault: `database` (dbroles' own store, seed 001's default) or `aws-secrets-manager` |
//! | `DBROLES_CREDENTIALS_KEY` | none | the KMS key that encrypts the own store's credentials on AWS |
//! | `DBROLES_SECRET_PREFIX` | `dbroles/` | where role secrets go in Secrets Manager |
//! | `DBROLES_DB_TLS` | `verify-full` | `disable`, `require` or `verify-full` |
//! | `DBROLES_DB_CA_FILE` | none | a PEM bundle of more CAs; `verify-full` always trusts the RDS CAs and the public roots |
//! | `DBROLES_HOME_ACCOUNT_ORGS` | none | the organisations that may act on the deployment's own account (comma-separated) |
//! | `DBROLES_CROSS_ACCOUNT_ROLE` | any | the name registered roles must have (`*` wildcards), as the IAM policies allow assuming |
//! | `DBROLES_SHARED_ACCOUNTS` | `false` | `true` lets several organisations register one account (each server then belongs to the first that acts on it) |
//! | `DBROLES_ORG_CONCURRENCY` | `50` | fair share: the most jobs one organisation may have running at once, fleet jobs' concurrency included |
//! | `DBROLES_METRICS_NAMESPACE` | `dbroles` | the CloudWatch namespace of the EMF metrics the functions log |
//! | `DBROLES_GROUPS_CLAIM` | `groups` | the JWT claim listing the caller's groups (Cognito: `cognito:groups`) |
//! | `DBROLES_ADMIN_GROUP` | `admin` | the group that may write |
//! | `DBROLES_READER_GROUPS` | `admin,auditor` | the groups that may read jobs, resources and accounts; `*`: every member |
//! | `DBROLES_PROVISION_SECURITY_GROUPS` | none | the provision function's security groups, admitted with `default_security_group` |
//! | `DBROLES_ENDPOINT_OVERRIDES` | none | `host=ip:port,...`: reach database endpoints elsewhere (tunnels, tests) |
//! | `DBROLES_WEBHOOK_URL`, `DBROLES_WEBHOOK_SECRET` | none | where `send-webhook` POSTs, and its `whsec_` secret |
//! | `DBROLES_VAULT_ADDR`, `DBROLES_VAULT_TOKEN`, `DBROLES_VAULT_NAMESPACE` | none | the Vault of `vault_provider` |
//! | `DBROLES_VAULT_MOUNT`, `DBROLES_VAULT_PREFIX` | any mount, no prefix | where jobs may write: `<mount>/data/<prefix><org>/...` |
//!
//! On AWS the two secrets come from Secrets Manager instead of the function's
//! configuration: `DBROLES_WEBHOOK_SECRET_ARN` and `DBROLES_VAULT_TOKEN_ARN` name
//! secrets whose string is the value, read once when the function starts.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;

use crate::accounts::AccountPolicy;
use crate::auth::GroupPolicy;
use crate::deps::VaultSettings;
use crate::engine::{self, TlsConfig};
use crate::job::Timestamp;
use crate::notify::{sign_webhook, Webhook};
use crate::request::{Invalid, VaultPath};

/// How a deployment provisions: its role prefix, TLS and time limits.
#[derive(Clone, Debug)]
pub struct Settings {
    pub role_prefix: String,
    /// Where Vault credentials may go, if the deployment has a Vault.
    pub vault: Option<VaultPolicy>,
    pub tls: TlsConfig,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    pub concurrency: usize,
    /// How long finished jobs are kept.
    pub retention: chrono::Duration,
    /// How long a job's hold on its database server lasts if nothing releases it
    /// (an execution that vanished): longer than the state machine's time-out.
    pub lock_lease: chrono::Duration,
    /// Who may act on which AWS account.
    pub accounts: AccountPolicy,
    /// Which groups may write and read.
    pub groups: GroupPolicy,
    /// Fair share: the most jobs one organisation may have running at once,
    /// fleet jobs' concurrency included (429 beyond it).
    pub org_concurrency: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            role_prefix: "hoop".into(),
            vault: None,
            tls: TlsConfig::default(),
            connect_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(60),
            concurrency: 4,
            retention: chrono::Duration::days(90),
            // The state machine's TimeoutSeconds (an hour), and a quarter more.
            lock_lease: chrono::Duration::minutes(75),
            accounts: AccountPolicy::default(),
            groups: GroupPolicy::default(),
            org_concurrency: 50,
        }
    }
}

impl Settings {
    /// When a job finished now is forgotten.
    pub fn expiry(&self) -> Timestamp {
        Timestamp(Timestamp::now().0 + self.retention)
    }

    /// Until when a lock taken now holds if nothing releases it.
    pub fn lease(&self) -> Timestamp {
        Timestamp(Timestamp::now().0 + self.lock_lease)
    }
}

/// Where a deployment lets jobs put credentials in Vault: one mount (any if
/// `None`), below one folder prefix, each organisation in a folder of its own:
/// `<mount>/data/<prefix><org>/<the rest of the job's folder>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultPolicy {
    pub mount: Option<String>,
    /// Empty, or folders ending with `/` (`dbroles/`).
    pub prefix: String,
}

impl VaultPolicy {
    /// The folder a job of `org` naming `secret_id` writes to; 400 for any other.
    pub fn path_for(&self, org: &str, secret_id: &str) -> Result<String, Invalid> {
        let path = VaultPath::parse(secret_id)?;
        if let Some(mount) = self.mount.as_ref().filter(|mount| **mount != path.mount) {
            return Err(Invalid(format!("vault_provider.secret_id: this deployment keeps credentials in the mount {mount}")));
        }
        let rest = path.folder.strip_prefix(&self.prefix).ok_or_else(|| {
            Invalid(format!("vault_provider.secret_id: must be a folder under {}/data/{}", path.mount, self.prefix))
        })?;
        let plain =
            !org.is_empty() && !org.starts_with('.') && org.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !plain {
            return Err(Invalid(format!("vault_provider: the organisation '{org}' cannot name a Vault folder")));
        }
        Ok(format!("{}/data/{}{org}/{rest}", path.mount, self.prefix))
    }
}

/// The Vault policy from `DBROLES_VAULT_MOUNT` and `DBROLES_VAULT_PREFIX`, if `DBROLES_VAULT_ADDR` names a Vault.
pub fn vault_policy_from_env() -> Result<Option<VaultPolicy>, ConfigError> {
    if var("DBROLES_VAULT_ADDR").is_none() {
        return Ok(None);
    }
    let prefix = var("DBROLES_VAULT_PREFIX").map(|p| format!("{}/", p.trim_matches('/'))).unwrap_or_default();
    if !prefix.is_empty() {
        VaultPath::parse(&format!("mount/data/{prefix}"))
            .map_err(|_| ConfigError(format!("DBROLES_VAULT_PREFIX={prefix}: expected plain folder names such as dbroles/")))?;
    }
    Ok(Some(VaultPolicy { mount: var("DBROLES_VAULT_MOUNT"), prefix }))
}

/// A setting that is missing or malformed: the message names the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl From<&str> for ConfigError {
    fn from(message: &str) -> Self {
        Self(message.to_string())
    }
}

/// Where role credentials go on AWS when a job names no Vault path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialsStore {
    /// dbroles' own store (seed 001's `database`): items of the table no API route
    /// can read, each value encrypted under this KMS key.
    Database { key: Option<String> },
    /// AWS Secrets Manager, one secret per role (the extension value `aws-secrets-manager`).
    SecretsManager,
}

impl CredentialsStore {
    fn from_env() -> Result<Self, ConfigError> {
        match var("DBROLES_CREDENTIALS_STORE").as_deref() {
            None | Some("database") => Ok(Self::Database { key: var("DBROLES_CREDENTIALS_KEY") }),
            Some("aws-secrets-manager") => Ok(Self::SecretsManager),
            Some(other) => {
                Err(ConfigError(format!("DBROLES_CREDENTIALS_STORE={other}: expected database or aws-secrets-manager")))
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub table: String,
    pub state_machine_arn: Option<String>,
    /// The fleet state machine (`DBROLES_FLEET_STATE_MACHINE_ARN`).
    pub fleet_state_machine_arn: Option<String>,
    pub org_claim: String,
    pub credentials: CredentialsStore,
    pub secret_prefix: String,
    pub endpoint_overrides: HashMap<String, String>,
    /// The CloudWatch namespace of the functions' EMF metrics ([`crate::metrics`]).
    pub metrics_namespace: String,
    pub settings: Settings,
}

/// What the logs show: `RUST_LOG` (`info` by default), but never the database
/// drivers' statement logging, which at `debug` would print the statements that
/// carry SCRAM verifiers and passwords.
pub fn log_filter() -> tracing_subscriber::EnvFilter {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    ["tokio_postgres=info", "mysql_async=info", "mysql_common=info"]
        .into_iter()
        .fold(filter, |filter, directive| filter.add_directive(directive.parse().expect("a valid directive")))
}

/// Reads a variable; a clear message names the one at fault.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parsed<T: FromStr>(name: &str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    var(name).map_or(Ok(default), |v| v.trim().parse().map_err(|e| ConfigError(format!("{name}={v}: {e}"))))
}

impl Config {
    /// A deployment on `table` with every other setting at its default.
    pub fn new(table: impl Into<String>) -> Self {
        Self {
            table: table.into(),
            state_machine_arn: None,
            fleet_state_machine_arn: None,
            org_claim: "org_id".into(),
            credentials: CredentialsStore::Database { key: None },
            secret_prefix: "dbroles/".into(),
            endpoint_overrides: HashMap::new(),
            metrics_namespace: "dbroles".into(),
            settings: Settings::default(),
        }
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        let role_prefix = var("DBROLES_ROLE_PREFIX").unwrap_or_else(|| "hoop".into());
        engine::validate_prefix_shape(&role_prefix).map_err(|e| ConfigError(format!("DBROLES_ROLE_PREFIX: {e}")))?;
        let tls = TlsConfig {
            mode: parsed("DBROLES_DB_TLS", engine::TlsMode::VerifyFull)?,
            ca_file: var("DBROLES_DB_CA_FILE").map(Into::into),
        };
        let retention_days: i64 = parsed("DBROLES_RETENTION_DAYS", 90)?;
        if retention_days < 1 {
            return Err(ConfigError(format!("DBROLES_RETENTION_DAYS={retention_days}: expected at least 1")));
        }
        let settings = Settings {
            role_prefix,
            tls,
            vault: vault_policy_from_env()?,
            retention: chrono::Duration::days(retention_days),
            accounts: AccountPolicy {
                home_orgs: list("DBROLES_HOME_ACCOUNT_ORGS"),
                role_name: var("DBROLES_CROSS_ACCOUNT_ROLE"),
                shared_accounts: parsed("DBROLES_SHARED_ACCOUNTS", false)?,
            },
            groups: GroupPolicy::from_env(),
            org_concurrency: parsed("DBROLES_ORG_CONCURRENCY", 50)?.max(1),
            ..Settings::default()
        };
        let defaults = Self::new(var("DBROLES_TABLE").ok_or("DBROLES_TABLE is not set: the DynamoDB table")?);
        Ok(Self {
            state_machine_arn: var("DBROLES_STATE_MACHINE_ARN"),
            fleet_state_machine_arn: var("DBROLES_FLEET_STATE_MACHINE_ARN"),
            org_claim: var("DBROLES_ORG_CLAIM").unwrap_or_else(|| defaults.org_claim.clone()),
            credentials: CredentialsStore::from_env()?,
            secret_prefix: var("DBROLES_SECRET_PREFIX").unwrap_or_else(|| defaults.secret_prefix.clone()),
            endpoint_overrides: overrides(&var("DBROLES_ENDPOINT_OVERRIDES").unwrap_or_default())?,
            metrics_namespace: var("DBROLES_METRICS_NAMESPACE").unwrap_or_else(|| defaults.metrics_namespace.clone()),
            settings,
            ..defaults
        })
    }
}

/// A comma-separated list; empty if unset.
pub fn list(name: &str) -> Vec<String> {
    var(name).unwrap_or_default().split(',').map(str::trim).filter(|item| !item.is_empty()).map(str::to_string).collect()
}

/// The webhook of `send-webhook`, if `DBROLES_WEBHOOK_URL` is set.
pub fn webhook_from_env() -> Result<Option<Webhook>, ConfigError> {
    webhook_with(var("DBROLES_WEBHOOK_SECRET"))
}

pub(crate) fn webhook_with(secret: Option<String>) -> Result<Option<Webhook>, ConfigError> {
    let Some(url) = var("DBROLES_WEBHOOK_URL") else { return Ok(None) };
    reqwest::Url::parse(&url).map_err(|e| ConfigError(format!("DBROLES_WEBHOOK_URL={url}: {e}")))?;
    let secret = secret.ok_or("DBROLES_WEBHOOK_SECRET is not set: the webhook's whsec_ secret")?;
    sign_webhook(&secret, "check", 0, "").map_err(|e| ConfigError(format!("DBROLES_WEBHOOK_SECRET: {e}")))?;
    Ok(Some(Webhook {
        url,
        secret: SecretString::from(secret),
        attempts: parsed("DBROLES_WEBHOOK_ATTEMPTS", 5)?,
        backoff: Duration::from_millis(parsed("DBROLES_WEBHOOK_BACKOFF_MS", 1000)?),
        timeout: Duration::from_secs(10),
    }))
}

/// The Vault of `vault_provider`, if `DBROLES_VAULT_ADDR` is set.
pub fn vault_from_env() -> Result<Option<VaultSettings>, ConfigError> {
    vault_with(var("DBROLES_VAULT_TOKEN"))
}

pub(crate) fn vault_with(token: Option<String>) -> Result<Option<VaultSettings>, ConfigError> {
    let Some(address) = var("DBROLES_VAULT_ADDR") else { return Ok(None) };
    let token = token.ok_or("DBROLES_VAULT_TOKEN is not set: the token for DBROLES_VAULT_ADDR")?;
    Ok(Some(VaultSettings { address, token: SecretString::from(token), namespace: var("DBROLES_VAULT_NAMESPACE") }))
}

/// `a.example=127.0.0.1:5432,b.example=10.0.0.2:3306`
fn overrides(text: &str) -> Result<HashMap<String, String>, ConfigError> {
    text.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| match entry.split_once('=') {
            Some((host, target)) if target.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok()) => {
                Ok((host.trim().to_string(), target.trim().to_string()))
            }
            _ => Err(ConfigError(format!("DBROLES_ENDPOINT_OVERRIDES: '{entry}' is not host=address:port"))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_folders_stay_in_the_mount_the_prefix_and_the_organisation() {
        let policy = VaultPolicy { mount: Some("kv".into()), prefix: "dbroles/".into() };
        assert_eq!(policy.path_for("acme", "kv/data/dbroles/payments/").unwrap(), "kv/data/dbroles/acme/payments/");
        assert!(policy.path_for("acme", "other/data/dbroles/").unwrap_err().0.contains("the mount kv"));
        assert!(policy.path_for("acme", "kv/data/elsewhere/").unwrap_err().0.contains("under kv/data/dbroles/"));
        assert!(policy.path_for("../b", "kv/data/dbroles/").unwrap_err().0.contains("cannot name a Vault folder"));
    }

    #[test]
    fn overrides_parse_and_name_a_bad_entry() {
        let map = overrides("a.example=127.0.0.1:5432, b.example=[::1]:3306").unwrap();
        assert_eq!(map["a.example"], "127.0.0.1:5432");
        assert_eq!(map["b.example"], "[::1]:3306");
        assert_eq!(
            overrides("a.example=127.0.0.1").unwrap_err().to_string(),
            "DBROLES_ENDPOINT_OVERRIDES: 'a.example=127.0.0.1' is not host=address:port"
        );
    }
}
