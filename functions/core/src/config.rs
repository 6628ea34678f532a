//! A deployment's configuration, read from the environment the SAM template sets.
//!
//! | variable | default | what |
//! | --- | --- | --- |
//! | `DBROLES_TABLE` | (required) | the DynamoDB table |
//! | `DBROLES_STATE_MACHINE_ARN` | (the API needs it) | the provisioning state machine |
//! | `DBROLES_ORG_CLAIM` | `org_id` | the JWT claim naming the caller's organisation |
//! | `DBROLES_ROLE_PREFIX` | `hoop` | roles are `<prefix>_ro`, `_rw`, `_ddl` |
//! | `DBROLES_RETENTION_DAYS` | `90` | how long finished jobs are kept |
//! | `DBROLES_SECRET_PREFIX` | `dbroles/` | where role secrets go in Secrets Manager |
//! | `DBROLES_DB_TLS` | `verify-full` | `disable`, `require` or `verify-full` |
//! | `DBROLES_DB_CA_FILE` | the public roots | a PEM bundle, e.g. the RDS global bundle |
//! | `DBROLES_CROSS_ACCOUNT_ROLE` | none | the role name assumed in other accounts |
//! | `DBROLES_ENDPOINT_OVERRIDES` | none | `host=ip:port,...`: reach database endpoints elsewhere (tunnels, tests) |
//! | `DBROLES_WEBHOOK_URL`, `DBROLES_WEBHOOK_SECRET` | none | where `send-webhook` POSTs, and its `whsec_` secret |
//! | `DBROLES_VAULT_ADDR`, `DBROLES_VAULT_TOKEN`, `DBROLES_VAULT_NAMESPACE` | none | the Vault of `vault_provider` |
//!
//! On AWS the two secrets come from Secrets Manager instead of the function's
//! configuration: `DBROLES_WEBHOOK_SECRET_ARN` and `DBROLES_VAULT_TOKEN_ARN` name
//! secrets whose string is the value, read once when the function starts.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use crate::engine::{self, TlsConfig};
use crate::inventory::rds::RdsInventory;
use crate::runner::Settings;
use crate::secrets::aws::AwsSecrets;
use crate::steps::{self, Deps, Ec2Network, EventBridgeEvents, LambdaHook, VaultSettings, Webhook};
use crate::store::dynamodb::DynamoStore;

#[derive(Clone, Debug)]
pub struct Config {
    pub table: String,
    pub state_machine_arn: Option<String>,
    pub org_claim: String,
    pub secret_prefix: String,
    pub cross_account_role: Option<String>,
    pub endpoint_overrides: HashMap<String, String>,
    pub settings: Settings,
}

/// Reads a variable; a clear message names the one at fault.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parsed<T: FromStr>(name: &str, default: T) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    var(name).map_or(Ok(default), |v| v.trim().parse().map_err(|e| format!("{name}={v}: {e}")))
}

impl Config {
    /// A deployment on `table` with every other setting at its default.
    pub fn new(table: impl Into<String>) -> Self {
        Self {
            table: table.into(),
            state_machine_arn: None,
            org_claim: "org_id".into(),
            secret_prefix: "dbroles/".into(),
            cross_account_role: None,
            endpoint_overrides: HashMap::new(),
            settings: Settings::default(),
        }
    }

    pub fn from_env() -> Result<Self, String> {
        let role_prefix = var("DBROLES_ROLE_PREFIX").unwrap_or_else(|| "hoop".into());
        engine::validate_prefix_shape(&role_prefix).map_err(|e| format!("DBROLES_ROLE_PREFIX: {e}"))?;
        let tls = TlsConfig {
            mode: parsed("DBROLES_DB_TLS", engine::TlsMode::VerifyFull)?,
            ca_file: var("DBROLES_DB_CA_FILE").map(Into::into),
        };
        let retention_days: i64 = parsed("DBROLES_RETENTION_DAYS", 90)?;
        if retention_days < 1 {
            return Err(format!("DBROLES_RETENTION_DAYS={retention_days}: expected at least 1"));
        }
        let settings = Settings { role_prefix, tls, retention: chrono::Duration::days(retention_days), ..Settings::default() };
        let defaults = Self::new(var("DBROLES_TABLE").ok_or("DBROLES_TABLE is not set: the DynamoDB table")?);
        Ok(Self {
            state_machine_arn: var("DBROLES_STATE_MACHINE_ARN"),
            org_claim: var("DBROLES_ORG_CLAIM").unwrap_or_else(|| defaults.org_claim.clone()),
            secret_prefix: var("DBROLES_SECRET_PREFIX").unwrap_or_else(|| defaults.secret_prefix.clone()),
            cross_account_role: var("DBROLES_CROSS_ACCOUNT_ROLE"),
            endpoint_overrides: overrides(&var("DBROLES_ENDPOINT_OVERRIDES").unwrap_or_default())?,
            settings,
            ..defaults
        })
    }
}

/// The webhook of `send-webhook`, if `DBROLES_WEBHOOK_URL` is set.
pub fn webhook_from_env() -> Result<Option<Webhook>, String> {
    webhook_with(var("DBROLES_WEBHOOK_SECRET"))
}

fn webhook_with(secret: Option<String>) -> Result<Option<Webhook>, String> {
    let Some(url) = var("DBROLES_WEBHOOK_URL") else { return Ok(None) };
    reqwest::Url::parse(&url).map_err(|e| format!("DBROLES_WEBHOOK_URL={url}: {e}"))?;
    let secret = secret.ok_or("DBROLES_WEBHOOK_SECRET is not set: the webhook's whsec_ secret")?;
    steps::sign_webhook(&secret, "check", 0, "").map_err(|e| format!("DBROLES_WEBHOOK_SECRET: {e}"))?;
    Ok(Some(Webhook {
        url,
        secret: SecretString::from(secret),
        attempts: parsed("DBROLES_WEBHOOK_ATTEMPTS", 5)?,
        backoff: Duration::from_millis(parsed("DBROLES_WEBHOOK_BACKOFF_MS", 1000)?),
        timeout: Duration::from_secs(10),
    }))
}

/// The Vault of `vault_provider`, if `DBROLES_VAULT_ADDR` is set.
pub fn vault_from_env() -> Result<Option<VaultSettings>, String> {
    vault_with(var("DBROLES_VAULT_TOKEN"))
}

fn vault_with(token: Option<String>) -> Result<Option<VaultSettings>, String> {
    let Some(address) = var("DBROLES_VAULT_ADDR") else { return Ok(None) };
    let token = token.ok_or("DBROLES_VAULT_TOKEN is not set: the token for DBROLES_VAULT_ADDR")?;
    Ok(Some(VaultSettings { address, token: SecretString::from(token), namespace: var("DBROLES_VAULT_NAMESPACE") }))
}

/// `a.example=127.0.0.1:5432,b.example=10.0.0.2:3306`
fn overrides(text: &str) -> Result<HashMap<String, String>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| match entry.split_once('=') {
            Some((host, target)) if target.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok()) => {
                Ok((host.trim().to_string(), target.trim().to_string()))
            }
            _ => Err(format!("DBROLES_ENDPOINT_OVERRIDES: '{entry}' is not host=address:port")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_parse_and_name_a_bad_entry() {
        let map = overrides("a.example=127.0.0.1:5432, b.example=[::1]:3306").unwrap();
        assert_eq!(map["a.example"], "127.0.0.1:5432");
        assert_eq!(map["b.example"], "[::1]:3306");
        assert_eq!(
            overrides("a.example=127.0.0.1").unwrap_err(),
            "DBROLES_ENDPOINT_OVERRIDES: 'a.example=127.0.0.1' is not host=address:port"
        );
    }
}

/// The steps' dependencies on AWS: the table, RDS, Secrets Manager (or the Vault
/// a job names), EC2, EventBridge (`DBROLES_EVENT_BUS`, default `default`) and the
/// hook function (`DBROLES_HOOK_FUNCTION`, none by default).
pub async fn aws_deps(config: &Config, aws: &aws_config::SdkConfig) -> Result<Deps, String> {
    let store = Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(aws), &config.table));
    let inventory = RdsInventory::new(aws, config.endpoint_overrides.clone())
        .with_secret_prefix(&config.secret_prefix)
        .with_cross_account_role(config.cross_account_role.clone());
    let secrets = aws_sdk_secretsmanager::Client::new(aws);
    let hook = var("DBROLES_HOOK_FUNCTION")
        .map(|function| Arc::new(LambdaHook { client: aws_sdk_lambda::Client::new(aws), function }) as Arc<dyn steps::Hook>);
    Ok(Deps {
        jobs: store.clone(),
        resources: store,
        inventory: Arc::new(inventory),
        secrets: Arc::new(AwsSecrets::new(secrets.clone(), config.secret_prefix.trim_end_matches('/'))),
        vault: vault_with(secret_setting(&secrets, "DBROLES_VAULT_TOKEN").await?)?,
        network: Some(Arc::new(Ec2Network { ec2: aws_sdk_ec2::Client::new(aws), rds: aws_sdk_rds::Client::new(aws) })),
        events: Some(Arc::new(EventBridgeEvents {
            client: aws_sdk_eventbridge::Client::new(aws),
            bus: var("DBROLES_EVENT_BUS").unwrap_or_else(|| "default".into()),
        })),
        hook,
        webhook: webhook_with(secret_setting(&secrets, "DBROLES_WEBHOOK_SECRET").await?)?,
        settings: config.settings.clone(),
    })
}

/// A secret setting: `NAME` itself, or the string of the secret `NAME_ARN` names.
async fn secret_setting(secrets: &aws_sdk_secretsmanager::Client, name: &str) -> Result<Option<String>, String> {
    if let Some(value) = var(name) {
        return Ok(Some(value));
    }
    let Some(arn) = var(&format!("{name}_ARN")) else { return Ok(None) };
    let out = secrets
        .get_secret_value()
        .secret_id(&arn)
        .send()
        .await
        .map_err(|e| format!("{name}_ARN={arn}: {}", aws_sdk_secretsmanager::error::DisplayErrorContext(&e)))?;
    out.secret_string().map(|s| Some(s.trim().to_string())).ok_or_else(|| format!("{name}_ARN={arn}: the secret has no string"))
}
