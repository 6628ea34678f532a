//! Chooses and builds the adapters, once, at start: on AWS ([`aws`]) and on a
//! laptop ([`local`]). Nothing else names an adapter to build it; everything
//! else takes the ports in [`Deps`].

use std::sync::Arc;

use crate::config::{Config, ConfigError, CredentialsStore, SecretSource, Settings, VaultSettings, WebhookSettings};
use crate::deps::{App, Deps};
use crate::inventory::rds::RdsInventory;
use crate::inventory::Inventory;
use crate::network::ec2::Ec2Network;
use crate::notify::eventbridge::EventBridgeEvents;
use crate::notify::lambda::LambdaHook;
use crate::notify::webhook::HttpWebhook;
use crate::notify::{Hook, Webhook};
use crate::secrets::aws::AwsSecrets;
use crate::secrets::database::DatabaseSecrets;
use crate::secrets::kms::KmsSealer;
use crate::secrets::SecretStore;
use crate::store::dynamodb::DynamoStore;
use crate::store::sqlite::SqliteStore;
use crate::workflow::step_functions::StepFunctions;

/// A deployment with no AWS: the embedded store, credentials kept in it, and
/// nothing to notify (the local CLI and server add a webhook or Vault from [`crate::config::LocalConfig`]).
pub fn local(store: Arc<SqliteStore>, inventory: Arc<dyn Inventory>, settings: Settings) -> Deps {
    Deps {
        jobs: store.clone(),
        fleets: store.clone(),
        resources: store.clone(),
        accounts: store.clone(),
        inventory,
        secrets: Arc::new(DatabaseSecrets::new(store)),
        vault: None,
        network: None,
        events: None,
        hook: None,
        webhook: None,
        settings,
        provision_machine: None,
    }
}

/// The webhook that POSTs over HTTP as `settings` say.
pub fn http_webhook(settings: WebhookSettings) -> Arc<dyn Webhook> {
    Arc::new(HttpWebhook { settings })
}

/// The deployment on AWS: the table, RDS, the credentials store (the own store
/// encrypted with KMS, or Secrets Manager; or the Vault a job names), EC2,
/// EventBridge and the hook function, as `config` names them. The secret
/// settings given by ARN are read from Secrets Manager here, once.
pub async fn aws(config: &Config, aws: &aws_config::SdkConfig) -> Result<Deps, ConfigError> {
    let store = Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(aws), &config.table));
    let inventory = RdsInventory::new(aws, config.endpoint_overrides.clone()).with_secret_prefix(&config.secret_prefix);
    let secrets = aws_sdk_secretsmanager::Client::new(aws);
    let hook = config
        .hook_function
        .clone()
        .map(|function| Arc::new(LambdaHook { client: aws_sdk_lambda::Client::new(aws), function }) as Arc<dyn Hook>);
    let webhook = webhook_settings(config, &secrets).await?.map(http_webhook);
    let vault = vault_settings(config, &secrets).await?;
    Ok(Deps {
        jobs: store.clone(),
        fleets: store.clone(),
        resources: store.clone(),
        accounts: store.clone(),
        inventory: Arc::new(inventory),
        secrets: credentials_store(config, aws, &secrets, &store),
        vault,
        network: Some(Arc::new(Ec2Network { home: aws.clone(), admit: config.provision_security_groups.clone() })),
        events: Some(Arc::new(EventBridgeEvents {
            client: aws_sdk_eventbridge::Client::new(aws),
            bus: config.event_bus.clone(),
        })),
        hook,
        webhook,
        settings: config.settings.clone(),
        provision_machine: config.state_machine_arn.clone(),
    })
}

/// The webhook's settings, its secret read (from Secrets Manager if given by ARN).
pub async fn webhook_settings(
    config: &Config,
    secrets: &aws_sdk_secretsmanager::Client,
) -> Result<Option<WebhookSettings>, ConfigError> {
    match &config.webhook {
        Some(webhook) => Ok(Some(webhook.with_secret(read(secrets, webhook.secret.as_ref()).await?)?)),
        None => Ok(None),
    }
}

/// The Vault's settings, its token read (from Secrets Manager if given by ARN).
/// Functions that only check a job's Vault folder (the API) have the address and no token: none.
pub async fn vault_settings(
    config: &Config,
    secrets: &aws_sdk_secretsmanager::Client,
) -> Result<Option<VaultSettings>, ConfigError> {
    match &config.vault {
        Some(vault) if vault.token.is_some() => Ok(Some(vault.with_token(read(secrets, vault.token.as_ref()).await?)?)),
        _ => Ok(None),
    }
}

/// The dependencies with the deployed state machines to carry jobs out (the API and the triggers).
pub fn aws_app(config: &Config, deps: &Deps, aws: &aws_config::SdkConfig) -> Result<App, ConfigError> {
    let state_machine_arn = config.state_machine_arn.clone().ok_or("DBROLES_STATE_MACHINE_ARN is not set")?;
    let fleet_state_machine_arn = config.fleet_state_machine_arn.clone();
    let workflow = StepFunctions { client: aws_sdk_sfn::Client::new(aws), state_machine_arn, fleet_state_machine_arn };
    Ok(App::new(deps, Arc::new(workflow)))
}

/// Where credentials go when a job names no Vault path.
fn credentials_store(
    config: &Config,
    aws: &aws_config::SdkConfig,
    secrets: &aws_sdk_secretsmanager::Client,
    store: &Arc<DynamoStore>,
) -> Arc<dyn SecretStore> {
    match &config.credentials {
        CredentialsStore::SecretsManager => {
            Arc::new(AwsSecrets::new(secrets.clone(), config.secret_prefix.trim_end_matches('/')))
        }
        CredentialsStore::Database { key } => {
            let sealer = KmsSealer { client: aws_sdk_kms::Client::new(aws), key: key.clone() };
            Arc::new(DatabaseSecrets::new(store.clone()).sealed_with(Arc::new(sealer)))
        }
    }
}

/// A secret setting's value: given, or the string of the secret its ARN names.
async fn read(secrets: &aws_sdk_secretsmanager::Client, source: Option<&SecretSource>) -> Result<Option<String>, ConfigError> {
    use secrecy::ExposeSecret;
    let (variable, arn) = match source {
        None => return Ok(None),
        Some(SecretSource::Value(value)) => return Ok(Some(value.expose_secret().to_string())),
        Some(SecretSource::Arn { variable, arn }) => (variable, arn),
    };
    let out = secrets
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| ConfigError(format!("{variable}={arn}: {}", crate::aws::describe(&e))))?;
    let value = out.secret_string().ok_or_else(|| ConfigError(format!("{variable}={arn}: the secret has no string")))?;
    Ok(Some(value.trim().to_string()))
}

/// Why a job's request names a store this deployment cannot give it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NoStore {
    #[error("vault_provider: this deployment has no Vault configured (DBROLES_VAULT_ADDR)")]
    NoVault,
    #[error(transparent)]
    Invalid(#[from] crate::model::request::Invalid),
}

/// The store for a job's credentials: the Vault folder its request names (in
/// the organisation's folder the deployment allows), or the deployment's default.
pub fn secret_store_for(
    deps: &Deps,
    org: &str,
    request: &crate::model::request::CreateJobRequest,
) -> Result<Arc<dyn SecretStore>, NoStore> {
    let Some(vault) = &request.vault_provider else { return Ok(deps.secrets.clone()) };
    let (Some(settings), Some(policy)) = (&deps.vault, &deps.settings.vault) else { return Err(NoStore::NoVault) };
    let path = policy.path_for(org, &vault.secret_id)?;
    Ok(Arc::new(crate::secrets::vault::VaultSecrets::new(
        &settings.address,
        settings.token.clone(),
        settings.namespace.clone(),
        &path,
    )))
}
