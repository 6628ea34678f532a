//! A step's failure and the one place each error of the domain becomes one:
//! its `errorType` is the stable name the state machine's `Retry` and `Catch`
//! match on, so whether a failure is retried is decided here, from the type.

use serde::Deserialize;

use crate::engine::EngineError;
use crate::inventory::InventoryError;
use crate::lifecycle::accounts::AccountError;
use crate::lifecycle::fleet::FleetError;
use crate::lifecycle::jobs::JobError;
use crate::network::NetworkError;
use crate::provision::ProvisionError;
use crate::secrets::SecretError;
use crate::store::StoreError;

/// The stable error types `Retry` and `Catch` match on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    /// Worth trying again: throttling, a 5xx, a time-out, a database failing over.
    Retryable,
    InstanceNotFound,
    AccessDenied,
    UnsupportedEngine,
    MasterSecretMissing,
    InstanceNotAvailable,
    /// The roles could not be provisioned, and trying again would not help.
    ProvisioningFailed,
    NotSupported,
    /// The job is no longer running (cancelled): nothing more to do.
    JobNotRunning,
    InvalidInput,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Retryable => "Retryable",
            ErrorType::InstanceNotFound => "InstanceNotFound",
            ErrorType::AccessDenied => "AccessDenied",
            ErrorType::UnsupportedEngine => "UnsupportedEngine",
            ErrorType::MasterSecretMissing => "MasterSecretMissing",
            ErrorType::InstanceNotAvailable => "InstanceNotAvailable",
            ErrorType::ProvisioningFailed => "ProvisioningFailed",
            ErrorType::NotSupported => "NotSupported",
            ErrorType::JobNotRunning => "JobNotRunning",
            ErrorType::InvalidInput => "InvalidInput",
        }
    }
}

/// A step's failure: `errorType` and `errorMessage` in the Lambda's answer.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{}: {message}", error_type.as_str())]
pub struct StepError {
    pub error_type: ErrorType,
    pub message: String,
}

impl StepError {
    pub fn new(error_type: ErrorType, message: impl Into<String>) -> Self {
        Self { error_type, message: message.into() }
    }

    /// `Retryable` when `transient`, else `otherwise`.
    fn classified(transient: bool, otherwise: ErrorType, message: impl Into<String>) -> Self {
        Self::new(if transient { ErrorType::Retryable } else { otherwise }, message)
    }

    /// The body a failed Lambda invocation carries.
    pub fn payload(&self) -> serde_json::Value {
        serde_json::json!({ "errorType": self.error_type.as_str(), "errorMessage": self.message })
    }
}

impl From<StepError> for lambda_runtime::Diagnostic {
    fn from(error: StepError) -> Self {
        Self { error_type: error.error_type.as_str().to_string(), error_message: error.message }
    }
}

/// Step Functions' error output, as a `Catch` with `ResultPath: $.error` stores it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, Deserialize)]
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

impl From<StoreError> for StepError {
    fn from(error: StoreError) -> Self {
        Self::new(ErrorType::Retryable, error.to_string())
    }
}

impl From<InventoryError> for StepError {
    fn from(error: InventoryError) -> Self {
        let error_type = match &error {
            InventoryError::AccessDenied(_) => ErrorType::AccessDenied,
            InventoryError::NoMasterSecret(_) => ErrorType::MasterSecretMissing,
            InventoryError::Unavailable(_) => ErrorType::Retryable,
            InventoryError::Failed(_) => ErrorType::ProvisioningFailed,
            InventoryError::NotSupported(_) => ErrorType::NotSupported,
        };
        Self::new(error_type, error.to_string())
    }
}

impl From<SecretError> for StepError {
    fn from(error: SecretError) -> Self {
        let otherwise = match &error {
            SecretError::AccessDenied(_) => ErrorType::AccessDenied,
            _ => ErrorType::ProvisioningFailed,
        };
        Self::classified(error.is_transient(), otherwise, error.to_string())
    }
}

impl From<EngineError> for StepError {
    fn from(error: EngineError) -> Self {
        Self::classified(error.is_transient(), ErrorType::ProvisioningFailed, error.to_string())
    }
}

impl From<ProvisionError> for StepError {
    fn from(error: ProvisionError) -> Self {
        match error {
            ProvisionError::SecretStore(source) => {
                let message = format!("storing the new credentials failed before any change to the database: {source}");
                Self { message, ..source.into() }
            }
            ProvisionError::Engine(source) => source.into(),
            ProvisionError::Inventory(source) => source.into(),
            ProvisionError::UnsupportedEngine(_) => Self::new(ErrorType::UnsupportedEngine, error.to_string()),
            ProvisionError::InvalidPrefix(_) => Self::new(ErrorType::InvalidInput, error.to_string()),
        }
    }
}

impl From<NetworkError> for StepError {
    fn from(error: NetworkError) -> Self {
        let error_type = match &error {
            NetworkError::InvalidCidr(_) => ErrorType::InvalidInput,
            NetworkError::NoVpc(_) => ErrorType::NotSupported,
            NetworkError::AccessDenied(_) => ErrorType::AccessDenied,
            NetworkError::Unavailable(_) => ErrorType::Retryable,
            NetworkError::Failed(_) => ErrorType::ProvisioningFailed,
        };
        Self::new(error_type, error.to_string())
    }
}

impl From<JobError> for StepError {
    fn from(error: JobError) -> Self {
        match error {
            JobError::Store(source) => source.into(),
            JobError::NotFound(_) | JobError::Finished(_) => Self::new(ErrorType::JobNotRunning, error.to_string()),
            JobError::UnknownInstance(_) | JobError::Replaced(_) => Self::new(ErrorType::InstanceNotFound, error.to_string()),
            JobError::Inventory(source) => source.into(),
            other => Self::new(ErrorType::ProvisioningFailed, other.to_string()),
        }
    }
}

impl From<FleetError> for StepError {
    fn from(error: FleetError) -> Self {
        match error {
            FleetError::Store(source) => source.into(),
            FleetError::Inventory(source) => source.into(),
            FleetError::Job(source) => source.into(),
            FleetError::Account(AccountError::Inventory(source)) => source.into(),
            FleetError::Account(AccountError::Store(source)) => source.into(),
            FleetError::Account(_) => Self::new(ErrorType::AccessDenied, error.to_string()),
            FleetError::NotFound(_) | FleetError::Finished(_) => Self::new(ErrorType::JobNotRunning, error.to_string()),
            FleetError::Invalid(_) => Self::new(ErrorType::InvalidInput, error.to_string()),
            other => Self::new(ErrorType::ProvisioningFailed, other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::DbError;

    #[test]
    fn transient_failures_are_retryable_and_permanent_ones_are_not() {
        let refused = EngineError::Connect { target: "db:5432".into(), source: DbError::transient("connection refused") };
        assert_eq!(StepError::from(ProvisionError::Engine(refused)).error_type, ErrorType::Retryable);
        let denied =
            EngineError::Connect { target: "db:5432".into(), source: DbError::permanent("password authentication failed") };
        assert_eq!(StepError::from(ProvisionError::Engine(denied)).error_type, ErrorType::ProvisioningFailed);
        let throttled = InventoryError::Unavailable("GetSecretValue: ThrottlingException".into());
        assert_eq!(StepError::from(ProvisionError::Inventory(throttled)).error_type, ErrorType::Retryable);
    }

    #[test]
    fn a_diagnostic_carries_the_stable_name() {
        let diagnostic = lambda_runtime::Diagnostic::from(StepError::new(ErrorType::Retryable, "throttled"));
        assert_eq!((diagnostic.error_type.as_str(), diagnostic.error_message.as_str()), ("Retryable", "throttled"));
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
