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
//! | `DBROLES_ROTATION` | `single` | how runs change passwords when a job does not say (`aws.rotation`): `single` or `alternating` |
//! | `DBROLES_MAX_DB_CONNECTIONS` | `4` | the most connections a job opens to a database server at once when it does not say (`aws.max_db_connections`): 1 to 32 |
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
//! | `DBROLES_WEBHOOK_ATTEMPTS`, `DBROLES_WEBHOOK_BACKOFF_MS` | `5`, `1000` | how often the webhook is tried, and the first wait (doubled each time) |
//! | `DBROLES_FLEET_STATE_MACHINE_ARN` | none | the fleet state machine, whose executions carry fleet jobs out |
//! | `DBROLES_HOOK_FUNCTION` | none | the Lambda function `run-hook` invokes |
//! | `DBROLES_EVENT_BUS` | `default` | the EventBridge bus of `DB Role Job Finished` |
//! | `DBROLES_PROVISION_TAG` | `dbroles:provision=true` | the tag (`key=value`) whose instances the tag trigger provisions |
//! | `DBROLES_DEFAULT_ORG` | `default` | the organisation of jobs a tag starts, unless the tag `dbroles:org` names one |
//! | `DBROLES_DEFAULT_AGENT_ID` | the nil UUID | the agent of their connections, unless the tag `dbroles:agent-id` names one |
//! | `DBROLES_STEP` | (the step functions need it) | the step a step function runs |
//! | `RUST_LOG` | `info` | what the logs show ([`log_filter`]) |
//!
//! On AWS the two secrets come from Secrets Manager instead of the function's
//! configuration: `DBROLES_WEBHOOK_SECRET_ARN` and `DBROLES_VAULT_TOKEN_ARN` name
//! secrets whose string is the value, read once when the function starts
//! ([`crate::wiring`] reads them).
//!
//! This module is the only reader of the environment: everything else takes
//! the typed sections ([`Config`], [`Settings`], [`TriggerSettings`],
//! [`WebhookConfig`], [`VaultConfig`]) it builds.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;

use crate::auth::GroupPolicy;
use crate::engine::{self, TlsConfig};
use crate::model::account::AccountPolicy;
use crate::model::request::{validate_max_db_connections, CreateJobRequest, Invalid, Rotation, VaultPath, MAX_DB_CONNECTIONS};
use crate::model::{AgentId, Timestamp};

/// How a deployment provisions: its role prefix, TLS and time limits.
#[derive(Clone, Debug)]
pub struct Settings {
    pub role_prefix: String,
    /// Where Vault credentials may go, if the deployment has a Vault.
    pub vault: Option<VaultPolicy>,
    pub tls: TlsConfig,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    /// The most connections a job opens to a database server at once, when it does not say.
    pub max_db_connections: usize,
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
    /// How runs change passwords when a job does not say.
    pub rotation: Rotation,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            role_prefix: "hoop".into(),
            vault: None,
            tls: TlsConfig::default(),
            connect_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(60),
            max_db_connections: 4,
            retention: chrono::Duration::days(90),
            // The state machine's TimeoutSeconds (an hour), and a quarter more.
            lock_lease: chrono::Duration::minutes(75),
            accounts: AccountPolicy::default(),
            groups: GroupPolicy::default(),
            org_concurrency: 50,
            rotation: Rotation::Single,
        }
    }
}

impl Settings {
    /// The rotation a job's runs use: its own, or the deployment's.
    pub fn rotation_of(&self, request: &CreateJobRequest) -> Rotation {
        request.aws.rotation.unwrap_or(self.rotation)
    }

    /// The most connections a job's runs open to its server at once: its own bound, or the deployment's.
    pub fn max_db_connections_of(&self, request: &CreateJobRequest) -> usize {
        request.aws.max_db_connections.map_or(self.max_db_connections, |bound| bound as usize)
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
    /// The Vault of `vault_provider`, if the deployment has one.
    pub vault: Option<VaultConfig>,
    /// Where `send-webhook` POSTs, if anywhere.
    pub webhook: Option<WebhookConfig>,
    /// The Lambda function `run-hook` invokes, if any.
    pub hook_function: Option<String>,
    /// The EventBridge bus of the job and fleet events.
    pub event_bus: String,
    /// The provision function's security groups, admitted with `default_security_group`.
    pub provision_security_groups: Vec<String>,
    /// How the tag trigger reacts to tagged instances.
    pub triggers: TriggerSettings,
    /// The step a step function runs (`DBROLES_STEP`).
    pub step: Option<String>,
}

/// A secret setting: given in the environment, or the string of a Secrets Manager secret.
#[derive(Clone, Debug)]
pub enum SecretSource {
    Value(SecretString),
    /// `variable` (`DBROLES_WEBHOOK_SECRET_ARN`) names the secret `arn`.
    Arn {
        variable: String,
        arn: String,
    },
}

impl SecretSource {
    /// `NAME` itself, or the secret `NAME_ARN` names.
    fn from_env(name: &str) -> Option<Self> {
        if let Some(value) = var(name) {
            return Some(Self::Value(SecretString::from(value)));
        }
        let variable = format!("{name}_ARN");
        var(&variable).map(|arn| Self::Arn { variable, arn })
    }
}

/// The webhook as the environment names it; its secret may still be a secret's ARN.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    pub url: String,
    pub secret: Option<SecretSource>,
    pub attempts: u32,
    pub backoff: Duration,
}

/// Where and how the finished job is POSTed, its secret read.
#[derive(Clone)]
pub struct WebhookSettings {
    pub url: String,
    /// The Standard Webhooks secret, `whsec_<base64>`.
    pub secret: SecretString,
    pub attempts: u32,
    /// The wait before the second attempt; doubled each time after.
    pub backoff: Duration,
    pub timeout: Duration,
}

impl WebhookConfig {
    /// The settings with the secret `secret` (read from the source), checked to be `whsec_<base64>`.
    pub fn with_secret(&self, secret: Option<String>) -> Result<WebhookSettings, ConfigError> {
        let secret = secret.ok_or("DBROLES_WEBHOOK_SECRET is not set: the webhook's whsec_ secret")?;
        webhook_key(&secret).ok_or("DBROLES_WEBHOOK_SECRET: the webhook secret is not whsec_<base64>")?;
        Ok(WebhookSettings {
            url: self.url.clone(),
            secret: SecretString::from(secret),
            attempts: self.attempts,
            backoff: self.backoff,
            timeout: Duration::from_secs(10),
        })
    }
}

/// The signing key of a Standard Webhooks secret (`whsec_<base64>`, or the base64 alone).
pub fn webhook_key(secret: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix("whsec_").unwrap_or(secret)).ok()
}

/// The Vault of `vault_provider` as the environment names it; its token may still be a secret's ARN.
#[derive(Clone, Debug)]
pub struct VaultConfig {
    pub address: String,
    pub namespace: Option<String>,
    /// None in functions that only check a job's Vault folder (the API).
    pub token: Option<SecretSource>,
}

/// The Vault a job's `vault_provider.secret_id` refers to, its token read.
#[derive(Clone)]
pub struct VaultSettings {
    pub address: String,
    pub token: SecretString,
    pub namespace: Option<String>,
}

impl VaultConfig {
    pub fn with_token(&self, token: Option<String>) -> Result<VaultSettings, ConfigError> {
        let token = token.ok_or("DBROLES_VAULT_TOKEN is not set: the token for DBROLES_VAULT_ADDR")?;
        Ok(VaultSettings { address: self.address.clone(), token: SecretString::from(token), namespace: self.namespace.clone() })
    }
}

/// How a deployment reacts to tagged instances.
#[derive(Clone, Debug)]
pub struct TriggerSettings {
    /// `dbroles:provision=true` by default.
    pub tag_key: String,
    pub tag_value: String,
    /// The organisation of jobs started by a tag, unless the tag `dbroles:org` names one.
    pub default_org: String,
    /// The agent of their connections, unless the tag `dbroles:agent-id` names one.
    pub default_agent_id: Option<AgentId>,
}

impl Default for TriggerSettings {
    fn default() -> Self {
        Self {
            tag_key: "dbroles:provision".into(),
            tag_value: "true".into(),
            default_org: "default".into(),
            default_agent_id: None,
        }
    }
}

impl TriggerSettings {
    /// From `DBROLES_PROVISION_TAG` (`key=value`), `DBROLES_DEFAULT_ORG` and `DBROLES_DEFAULT_AGENT_ID`.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut settings = Self::default();
        if let Some(tag) = var("DBROLES_PROVISION_TAG") {
            let (key, value) =
                tag.split_once('=').ok_or_else(|| ConfigError(format!("DBROLES_PROVISION_TAG={tag}: expected key=value")))?;
            (settings.tag_key, settings.tag_value) = (key.trim().into(), value.trim().into());
        }
        if let Some(org) = var("DBROLES_DEFAULT_ORG") {
            settings.default_org = org;
        }
        settings.default_agent_id = var("DBROLES_DEFAULT_AGENT_ID")
            .map(|id| id.parse().map_err(|e: Invalid| ConfigError(format!("DBROLES_DEFAULT_AGENT_ID={id}: {e}"))))
            .transpose()?;
        Ok(settings)
    }
}

/// Which groups may write and read: `DBROLES_GROUPS_CLAIM`, `DBROLES_ADMIN_GROUP`
/// and `DBROLES_READER_GROUPS` (`*`: every member).
pub fn groups_from_env() -> GroupPolicy {
    let defaults = GroupPolicy::default();
    let readers = match list("DBROLES_READER_GROUPS") {
        list if list.is_empty() => defaults.readers,
        list if list.iter().any(|group| group == "*") => Vec::new(),
        list => list,
    };
    GroupPolicy {
        claim: var("DBROLES_GROUPS_CLAIM").unwrap_or(defaults.claim),
        admin: var("DBROLES_ADMIN_GROUP").unwrap_or(defaults.admin),
        readers,
    }
}

/// A variable a local instances file names (`master_password_env`).
pub fn named_variable(name: &str) -> Option<String> {
    std::env::var(name).ok()
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
fn var(name: &str) -> Option<String> {
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
            vault: None,
            webhook: None,
            hook_function: None,
            event_bus: "default".into(),
            provision_security_groups: Vec::new(),
            triggers: TriggerSettings::default(),
            step: None,
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
            groups: groups_from_env(),
            org_concurrency: parsed("DBROLES_ORG_CONCURRENCY", 50)?.max(1),
            rotation: parsed("DBROLES_ROTATION", Rotation::Single)?,
            max_db_connections: max_db_connections_from_env()?,
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
            vault: vault_config(SecretSource::from_env("DBROLES_VAULT_TOKEN")),
            webhook: webhook_config(SecretSource::from_env("DBROLES_WEBHOOK_SECRET"))?,
            hook_function: var("DBROLES_HOOK_FUNCTION"),
            event_bus: var("DBROLES_EVENT_BUS").unwrap_or_else(|| defaults.event_bus.clone()),
            provision_security_groups: list("DBROLES_PROVISION_SECURITY_GROUPS"),
            triggers: TriggerSettings::from_env()?,
            step: var("DBROLES_STEP"),
            ..defaults
        })
    }
}

/// A comma-separated list; empty if unset.
fn list(name: &str) -> Vec<String> {
    var(name).unwrap_or_default().split(',').map(str::trim).filter(|item| !item.is_empty()).map(str::to_string).collect()
}

/// The webhook of `send-webhook`, if `DBROLES_WEBHOOK_URL` is set.
fn webhook_config(secret: Option<SecretSource>) -> Result<Option<WebhookConfig>, ConfigError> {
    let Some(url) = var("DBROLES_WEBHOOK_URL") else { return Ok(None) };
    reqwest::Url::parse(&url).map_err(|e| ConfigError(format!("DBROLES_WEBHOOK_URL={url}: {e}")))?;
    Ok(Some(WebhookConfig {
        url,
        secret,
        attempts: parsed("DBROLES_WEBHOOK_ATTEMPTS", 5)?,
        backoff: Duration::from_millis(parsed("DBROLES_WEBHOOK_BACKOFF_MS", 1000)?),
    }))
}

/// The Vault of `vault_provider`, if `DBROLES_VAULT_ADDR` is set.
fn vault_config(token: Option<SecretSource>) -> Option<VaultConfig> {
    let address = var("DBROLES_VAULT_ADDR")?;
    Some(VaultConfig { address, namespace: var("DBROLES_VAULT_NAMESPACE"), token })
}

/// What a local deployment (the CLI) reads: the webhook and Vault, their secrets given directly.
pub struct LocalConfig {
    pub vault_policy: Option<VaultPolicy>,
    pub groups: GroupPolicy,
    pub vault: Option<VaultSettings>,
    pub webhook: Option<WebhookSettings>,
    /// `DBROLES_ROTATION`: how runs change passwords when a job does not say.
    pub rotation: Rotation,
    /// `DBROLES_MAX_DB_CONNECTIONS`: the most connections a job opens to a server at once when it does not say.
    pub max_db_connections: usize,
}

impl LocalConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let webhook = webhook_config(None)?.map(|webhook| webhook.with_secret(var("DBROLES_WEBHOOK_SECRET"))).transpose()?;
        let vault = vault_config(None).map(|vault| vault.with_token(var("DBROLES_VAULT_TOKEN"))).transpose()?;
        let rotation = parsed("DBROLES_ROTATION", Rotation::Single)?;
        let max_db_connections = max_db_connections_from_env()?;
        Ok(Self {
            vault_policy: vault_policy_from_env()?,
            groups: groups_from_env(),
            vault,
            webhook,
            rotation,
            max_db_connections,
        })
    }
}

/// `DBROLES_MAX_DB_CONNECTIONS`, 1 to 32 (4 if unset).
fn max_db_connections_from_env() -> Result<usize, ConfigError> {
    let bound: u32 = parsed("DBROLES_MAX_DB_CONNECTIONS", 4)?;
    validate_max_db_connections(Some(bound))
        .map_err(|_| ConfigError(format!("DBROLES_MAX_DB_CONNECTIONS={bound}: must be 1 to {MAX_DB_CONNECTIONS}")))?;
    Ok(bound as usize)
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
