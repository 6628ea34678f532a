//! The dependency containers, built once at start and handed in: [`Deps`], what
//! the steps reach, and [`App`], what the job lifecycle, the API and the triggers
//! reach. Each has one constructor per deployment kind: on AWS
//! ([`Deps::aws`]), and local ([`Deps::local`]).

use std::sync::Arc;

use secrecy::SecretString;

use crate::config::{self, Config, ConfigError, CredentialsStore, Settings};
use crate::inventory::rds::RdsInventory;
use crate::inventory::Inventory;
use crate::network::ec2::Ec2Network;
use crate::network::Network;
use crate::notify::{EventBridgeEvents, Events, Hook, LambdaHook, Webhook};
use crate::secrets::aws::AwsSecrets;
use crate::secrets::database::DatabaseSecrets;
use crate::secrets::kms::KmsSealer;
use crate::secrets::SecretStore;
use crate::store::dynamodb::DynamoStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{AccountStore, FleetStore, JobStore, ResourceStore};
use crate::workflow::Workflow;

/// The Vault a job's `vault_provider.secret_id` refers to.
#[derive(Clone)]
pub struct VaultSettings {
    pub address: String,
    pub token: SecretString,
    pub namespace: Option<String>,
}

/// Everything the steps reach: the stores, the instances, the secret stores and the notifications.
#[derive(Clone)]
pub struct Deps {
    pub jobs: Arc<dyn JobStore>,
    pub fleets: Arc<dyn FleetStore>,
    pub resources: Arc<dyn ResourceStore>,
    /// The AWS accounts organisations registered.
    pub accounts: Arc<dyn AccountStore>,
    pub inventory: Arc<dyn Inventory>,
    /// Where credentials go when the job names no Vault path.
    pub secrets: Arc<dyn SecretStore>,
    /// The Vault a job's `vault_provider.secret_id` refers to, if the deployment has one.
    pub vault: Option<VaultSettings>,
    pub network: Option<Arc<dyn Network>>,
    pub events: Option<Arc<dyn Events>>,
    pub hook: Option<Arc<dyn Hook>>,
    pub webhook: Option<Webhook>,
    pub settings: Settings,
    /// The provisioning state machine (`DBROLES_STATE_MACHINE_ARN`), whose
    /// executions a fleet's Map starts; none locally.
    pub provision_machine: Option<String>,
}

impl Deps {
    /// A deployment with no AWS: the embedded store, credentials kept in it, and
    /// nothing to notify (the local CLI and server add a webhook or Vault from the environment).
    pub fn local(store: Arc<SqliteStore>, inventory: Arc<dyn Inventory>, settings: Settings) -> Self {
        Self {
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

    /// The deployment on AWS: the table, RDS, the credentials store (the own store
    /// encrypted with KMS, or Secrets Manager; or the Vault a job names), EC2,
    /// EventBridge (`DBROLES_EVENT_BUS`, default `default`) and the hook function
    /// (`DBROLES_HOOK_FUNCTION`, none by default).
    pub async fn aws(config: &Config, aws: &aws_config::SdkConfig) -> Result<Self, ConfigError> {
        let store = Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(aws), &config.table));
        let inventory = RdsInventory::new(aws, config.endpoint_overrides.clone()).with_secret_prefix(&config.secret_prefix);
        let secrets = aws_sdk_secretsmanager::Client::new(aws);
        let hook = config::var("DBROLES_HOOK_FUNCTION")
            .map(|function| Arc::new(LambdaHook { client: aws_sdk_lambda::Client::new(aws), function }) as Arc<dyn Hook>);
        Ok(Self {
            jobs: store.clone(),
            fleets: store.clone(),
            resources: store.clone(),
            accounts: store.clone(),
            inventory: Arc::new(inventory),
            secrets: match &config.credentials {
                CredentialsStore::SecretsManager => {
                    Arc::new(AwsSecrets::new(secrets.clone(), config.secret_prefix.trim_end_matches('/')))
                }
                CredentialsStore::Database { key } => {
                    let sealer = KmsSealer { client: aws_sdk_kms::Client::new(aws), key: key.clone() };
                    Arc::new(DatabaseSecrets::new(store.clone()).sealed_with(Arc::new(sealer)))
                }
            },
            // Functions that only check a job's Vault folder (the API) have the address and no token.
            vault: match secret_setting(&secrets, "DBROLES_VAULT_TOKEN").await? {
                Some(token) => config::vault_with(Some(token))?,
                None => None,
            },
            network: Some(Arc::new(Ec2Network { home: aws.clone(), admit: config::list("DBROLES_PROVISION_SECURITY_GROUPS") })),
            events: Some(Arc::new(EventBridgeEvents {
                client: aws_sdk_eventbridge::Client::new(aws),
                bus: config::var("DBROLES_EVENT_BUS").unwrap_or_else(|| "default".into()),
            })),
            hook,
            webhook: config::webhook_with(secret_setting(&secrets, "DBROLES_WEBHOOK_SECRET").await?)?,
            settings: config.settings.clone(),
            provision_machine: config.state_machine_arn.clone(),
        })
    }
}

/// A secret setting: `NAME` itself, or the string of the secret `NAME_ARN` names.
async fn secret_setting(secrets: &aws_sdk_secretsmanager::Client, name: &str) -> Result<Option<String>, ConfigError> {
    if let Some(value) = config::var(name) {
        return Ok(Some(value));
    }
    let Some(arn) = config::var(&format!("{name}_ARN")) else { return Ok(None) };
    let out = secrets
        .get_secret_value()
        .secret_id(&arn)
        .send()
        .await
        .map_err(|e| ConfigError(format!("{name}_ARN={arn}: {}", crate::aws::describe(&e))))?;
    let value = out.secret_string().ok_or_else(|| ConfigError(format!("{name}_ARN={arn}: the secret has no string")))?;
    Ok(Some(value.trim().to_string()))
}

/// What the job lifecycle, the API and the triggers reach: the steps'
/// dependencies, and the workflow that carries jobs out.
#[derive(Clone)]
pub struct App {
    pub deps: Deps,
    pub workflow: Arc<dyn Workflow>,
}

impl App {
    /// The steps' dependencies, with `workflow` to carry jobs out.
    pub fn new(deps: &Deps, workflow: Arc<dyn Workflow>) -> Self {
        Self { deps: deps.clone(), workflow }
    }
}

/// An `App` is the steps' dependencies and a workflow: `app.jobs` is `app.deps.jobs`.
impl std::ops::Deref for App {
    type Target = Deps;

    fn deref(&self) -> &Deps {
        &self.deps
    }
}
