//! AWS SDK errors read once, for every adapter: is a failure worth another
//! attempt (throttling, a 5xx, a time-out), a refusal (access denied), a definite
//! "not found", or something else? The adapters turn the answer into their own
//! error types, and the steps into `Retryable` or not.

use aws_sdk_rds::config::http::HttpResponse;
use aws_sdk_rds::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// What kind of failure an AWS call had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Throttled, a server error, a time-out or no connection: try again later.
    Transient,
    AccessDenied,
    /// The service said definitely that the thing does not exist.
    NotFound,
    Other,
}

/// The error codes AWS services use for throttling and passing trouble.
const TRANSIENT_CODES: [&str; 16] = [
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "SlowDown",
    "EC2ThrottledException",
    "PriorRequestNotComplete",
    "TransactionInProgressException",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalFailure",
    "ServiceUnavailable",
];

/// Reads an SDK error.
pub fn fault<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> Fault {
    match error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => return Fault::Transient,
        SdkError::ConstructionFailure(_) => return Fault::Other,
        _ => {}
    }
    let code = error.code().unwrap_or_default();
    let status = error.raw_response().map_or(0, |response| response.status().as_u16());
    if TRANSIENT_CODES.contains(&code) || status == 429 || status >= 500 {
        Fault::Transient
    } else if code.contains("AccessDenied") || code.contains("UnauthorizedOperation") || code == "AuthorizationError" {
        Fault::AccessDenied
    } else if code == "ResourceNotFoundException" || code.ends_with("NotFound") || code.ends_with("NotFoundFault") {
        Fault::NotFound
    } else {
        Fault::Other
    }
}

/// An adapter's error for a failed call `what`: `[denied, transient, failed]`
/// by the fault, each given the message (a definite "not found" counts as failed).
pub fn classify<E, T>(what: &str, error: SdkError<E, HttpResponse>, [denied, transient, failed]: [fn(String) -> T; 3]) -> T
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let message = format!("{what}: {}", describe(&error));
    match fault(&error) {
        Fault::AccessDenied => denied(message),
        Fault::Transient => transient(message),
        Fault::NotFound | Fault::Other => failed(message),
    }
}

/// The error with its causes, as a message (SDK errors hold no secret values).
pub fn describe<E: std::error::Error + 'static>(error: &SdkError<E, HttpResponse>) -> String {
    DisplayErrorContext(error).to_string()
}
