//! The steps of the provisioning workflow: one handler each, run by a Lambda of
//! its own on AWS and by the local executor in-process. The state machine
//! (`statemachine/provision.asl.json`) passes a small [`State`] between them; the
//! job itself lives in the store.

mod network;
mod notify;
mod work;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use network::{Ec2Network, Network};
pub use notify::{sign_webhook, EventBridgeEvents, Events, Hook, HookOutcome, LambdaHook, Webhook};

use crate::inventory::Inventory;
use crate::runner::Settings;
use crate::secrets::SecretStore;
use crate::store::{JobStore, ResourceStore};

/// A Task of the state machine. Its resource is `${<Name>FunctionArn}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    Resolve,
    OpenNetwork,
    MasterCredentials,
    InstanceStatus,
    Provision,
    CreateConnections,
    Hook,
    Finalize,
    Webhook,
}

impl Step {
    pub const ALL: [Step; 9] = [
        Step::Resolve,
        Step::OpenNetwork,
        Step::MasterCredentials,
        Step::InstanceStatus,
        Step::Provision,
        Step::CreateConnections,
        Step::Hook,
        Step::Finalize,
        Step::Webhook,
    ];

    /// The function's name: `functions/<name>/`, and `dbroles-<name>` deployed.
    pub fn name(self) -> &'static str {
        match self {
            Step::Resolve => "resolve",
            Step::OpenNetwork => "open-network",
            Step::MasterCredentials => "master-credentials",
            Step::InstanceStatus => "instance-status",
            Step::Provision => "provision",
            Step::CreateConnections => "create-connections",
            Step::Hook => "hook",
            Step::Finalize => "finalize",
            Step::Webhook => "webhook",
        }
    }

    /// The definition substitution naming the function's ARN.
    pub fn substitution(self) -> String {
        let pascal: String = self.name().split('-').map(|word| word[..1].to_uppercase() + &word[1..]).collect();
        format!("{pascal}FunctionArn")
    }

    /// The step a Task resource names: `${ResolveFunctionArn}`, or a deployed
    /// function's name or ARN (`...:function:dbroles-resolve`).
    pub fn from_resource(resource: &str) -> Option<Step> {
        let name = resource.rsplit(':').next().unwrap_or(resource);
        Step::ALL.into_iter().find(|step| {
            resource == format!("${{{}}}", step.substitution())
                || name == step.name()
                || name.strip_prefix("dbroles-") == Some(step.name())
        })
    }
}

/// What the state machine carries from step to step: which job, and the choices ahead.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub org_id: String,
    pub job_id: String,
    /// The request asked for a security group.
    #[serde(default)]
    pub open_network: bool,
    /// The master credentials can be read (after a reset: once the instance is available again).
    #[serde(default)]
    pub master_ready: bool,
    /// How often the instance's status was checked after a master password reset.
    #[serde(default)]
    pub status_checks: u32,
    #[serde(default)]
    pub create_connections: bool,
    #[serde(default)]
    pub send_webhook: bool,
    /// Set by a `Catch`: the error that ended the job early.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CaughtError>,
}

/// Step Functions' error output, as a `Catch` with `ResultPath: $.error` stores it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaughtError {
    #[serde(rename = "Error")]
    pub error: String,
    #[serde(rename = "Cause", default)]
    pub cause: String,
}

impl CaughtError {
    /// The message for the job: a Lambda's `errorMessage`, or the cause as it is.
    pub fn message(&self) -> String {
        #[derive(Deserialize)]
        struct LambdaCause {
            #[serde(rename = "errorMessage")]
            error_message: String,
        }
        match serde_json::from_str::<LambdaCause>(&self.cause) {
            Ok(cause) => cause.error_message,
            Err(_) if self.cause.is_empty() => self.error.clone(),
            Err(_) => format!("{}: {}", self.error, self.cause),
        }
    }
}

/// The stable error types `Retry` and `Catch` match on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorType {
    /// Worth trying again: throttling, a store or service briefly unavailable.
    Retryable,
    InstanceNotFound,
    AccessDenied,
    UnsupportedEngine,
    MasterSecretMissing,
    InstanceNotAvailable,
    /// The roles could not be provisioned (the database refused or was unreachable, the secret store failed).
    ProvisioningFailed,
    NotSupported,
    /// The job is no longer running (cancelled): nothing more to do.
    JobNotRunning,
    InvalidInput,
}

/// A step's failure: `errorType` and `errorMessage` in the Lambda's answer.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{error_type:?}: {message}")]
pub struct StepError {
    pub error_type: ErrorType,
    pub message: String,
}

impl StepError {
    pub fn new(error_type: ErrorType, message: impl Into<String>) -> Self {
        Self { error_type, message: message.into() }
    }

    pub fn type_name(&self) -> String {
        serde_json::to_value(self.error_type).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
    }

    /// The body a failed Lambda invocation carries.
    pub fn payload(&self) -> serde_json::Value {
        serde_json::json!({ "errorType": self.type_name(), "errorMessage": self.message })
    }
}

impl From<crate::store::StoreError> for StepError {
    fn from(error: crate::store::StoreError) -> Self {
        Self::new(ErrorType::Retryable, error.to_string())
    }
}

impl From<crate::inventory::InventoryError> for StepError {
    fn from(error: crate::inventory::InventoryError) -> Self {
        use crate::inventory::InventoryError as E;
        let error_type = match &error {
            E::AccessDenied(_) => ErrorType::AccessDenied,
            E::NoMasterSecret(_) => ErrorType::MasterSecretMissing,
            E::Unavailable(_) => ErrorType::Retryable,
            E::NotSupported(_) => ErrorType::NotSupported,
        };
        Self::new(error_type, error.to_string())
    }
}

/// Where role credentials go when a job names no Vault path.
#[derive(Clone)]
pub struct VaultSettings {
    pub address: String,
    pub token: secrecy::SecretString,
    pub namespace: Option<String>,
}

/// Everything the steps reach: the stores, the instances, the secret stores and the notifications.
#[derive(Clone)]
pub struct Deps {
    pub jobs: Arc<dyn JobStore>,
    pub resources: Arc<dyn ResourceStore>,
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
}

impl Deps {
    /// A deployment with no AWS: the embedded store, credentials kept in it, and
    /// nothing to notify (the local CLI and server add a webhook or Vault from the environment).
    pub fn local(store: Arc<crate::store::sqlite::SqliteStore>, inventory: Arc<dyn Inventory>, settings: Settings) -> Self {
        Self {
            jobs: store.clone(),
            resources: store.clone(),
            inventory,
            secrets: Arc::new(crate::secrets::database::DatabaseSecrets::new(store)),
            vault: None,
            network: None,
            events: None,
            hook: None,
            webhook: None,
            settings,
        }
    }
}

/// Runs one step on the state the state machine passed in; the new state out.
pub async fn run(step: Step, deps: &Deps, input: serde_json::Value) -> Result<serde_json::Value, StepError> {
    let state: State = serde_json::from_value(input)
        .map_err(|e| StepError::new(ErrorType::InvalidInput, format!("the {} step's input: {e}", step.name())))?;
    let state = match step {
        Step::Resolve => work::resolve(deps, state).await?,
        Step::OpenNetwork => work::open_network(deps, state).await?,
        Step::MasterCredentials => work::master_credentials(deps, state).await?,
        Step::InstanceStatus => work::instance_status(deps, state).await?,
        Step::Provision => work::provision(deps, state).await?,
        Step::CreateConnections => work::create_connections(deps, state).await?,
        Step::Hook => work::hook(deps, state).await?,
        Step::Finalize => work::finalize(deps, state).await?,
        Step::Webhook => work::webhook(deps, state).await?,
    };
    Ok(serde_json::to_value(state).expect("the state serialises"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_name_their_steps() {
        assert_eq!(Step::OpenNetwork.substitution(), "OpenNetworkFunctionArn");
        assert_eq!(Step::from_resource("${OpenNetworkFunctionArn}"), Some(Step::OpenNetwork));
        assert_eq!(Step::from_resource("arn:aws:lambda:us-east-1:123456789012:function:dbroles-finalize"), Some(Step::Finalize));
        assert_eq!(Step::from_resource("arn:aws:lambda:us-east-1:123456789012:function:other"), None);
    }

    #[test]
    fn caught_errors_read_the_lambda_message() {
        let caught = CaughtError {
            error: "InstanceNotFound".into(),
            cause: r#"{"errorType":"InstanceNotFound","errorMessage":"no instance x"}"#.into(),
        };
        assert_eq!(caught.message(), "no instance x");
        let timeout = CaughtError { error: "States.Timeout".into(), cause: String::new() };
        assert_eq!(timeout.message(), "States.Timeout");
    }
}
