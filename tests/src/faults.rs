//! Faults the tests inject: into the AWS calls a test proxy forwards (throttling
//! for JSON protocols such as Secrets Manager's, service errors for query
//! protocols such as RDS's), and into a secret store ([`FaultyStore`]).

use std::sync::{Arc, Mutex};

use axum::response::{IntoResponse, Response};

#[derive(Clone, Default)]
pub struct Faults(Arc<Mutex<Rules>>);

#[derive(Default)]
struct Rules {
    armed: Vec<Rule>,
    /// Armed when the step function of that name is first invoked.
    on_invoke: Vec<(String, Rule)>,
}

#[derive(Clone)]
struct Rule {
    /// `GetSecretValue`, `ModifyDBInstance`.
    operation: String,
    left: u32,
    /// `None`: throttled; else this error code (query protocol).
    code: Option<String>,
}

impl Faults {
    /// The next `times` calls of `operation` are throttled.
    pub fn throttle(&self, operation: &str, times: u32) {
        self.0.lock().unwrap().armed.push(Rule { operation: operation.into(), left: times, code: None });
    }

    /// As [`Faults::throttle`], from the first invocation of `function` (`dbroles-provision`) on.
    pub fn throttle_from(&self, function: &str, operation: &str, times: u32) {
        let rule = Rule { operation: operation.into(), left: times, code: None };
        self.0.lock().unwrap().on_invoke.push((function.to_string(), rule));
    }

    /// The next `times` calls of the query-protocol `operation` fail with the service error `code`.
    pub fn fail(&self, operation: &str, code: &str, times: u32) {
        self.0.lock().unwrap().armed.push(Rule { operation: operation.into(), left: times, code: Some(code.into()) });
    }

    /// Faults armed and not yet met.
    pub fn pending(&self) -> u32 {
        self.0.lock().unwrap().armed.iter().map(|rule| rule.left).sum()
    }

    pub(crate) fn invoked(&self, function: &str) {
        let mut rules = self.0.lock().unwrap();
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut rules.on_invoke).into_iter().partition(|(f, _)| f == function);
        rules.on_invoke = later;
        rules.armed.extend(now.into_iter().map(|(_, rule)| rule));
    }

    /// The answer in place of this request's, if a fault is armed for its operation (one fewer remain).
    pub(crate) fn answer(&self, parts: &http::request::Parts, body: &[u8]) -> Option<Response> {
        let target = parts.headers.get("x-amz-target").and_then(|t| t.to_str().ok()).map(|t| t.rsplit('.').next().unwrap_or(t));
        let form = std::str::from_utf8(body).ok().and_then(|text| text.split('&').find_map(|pair| pair.strip_prefix("Action=")));
        let operation = target.or(form)?;
        let mut rules = self.0.lock().unwrap();
        let rule = rules.armed.iter_mut().find(|rule| rule.left > 0 && rule.operation == operation)?;
        rule.left -= 1;
        Some(match &rule.code {
            None => {
                let body = serde_json::json!({"__type": "ThrottlingException", "message": "Rate exceeded"}).to_string();
                let headers = [("content-type", "application/x-amz-json-1.1"), ("x-amzn-errortype", "ThrottlingException")];
                (http::StatusCode::BAD_REQUEST, headers, body).into_response()
            }
            Some(code) => {
                let body = format!(
                    "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>injected by the test</Message></Error>\
                     <RequestId>test</RequestId></ErrorResponse>"
                );
                (http::StatusCode::BAD_REQUEST, [("content-type", "text/xml")], body).into_response()
            }
        })
    }
}

/// Where a provisioning run is cut, in the secret store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Staging fails: nothing may change in the database.
    Staging,
    /// Promotion fails after the login: the previous password must be put back.
    Promotion,
    /// The run dies while promoting (the store never answers): the next run must
    /// promote what the database has.
    Death,
}

/// A secret store that fails, or never answers, at one point; otherwise the one it wraps.
pub struct FaultyStore {
    pub inner: Arc<dyn dbroles_core::secrets::SecretStore>,
    pub cut: Cut,
}

#[async_trait::async_trait]
impl dbroles_core::secrets::SecretStore for FaultyStore {
    fn provider(&self) -> dbroles_core::model::job::SecretsProvider {
        self.inner.provider()
    }
    fn secret_id(&self, secret: &dbroles_core::secrets::SecretRef) -> String {
        self.inner.secret_id(secret)
    }
    async fn stage(
        &self,
        secret: &dbroles_core::secrets::SecretRef,
        credentials: &dbroles_core::secrets::RoleCredentials,
    ) -> Result<dbroles_core::secrets::Staged, dbroles_core::secrets::SecretError> {
        match self.cut {
            Cut::Staging => Err(dbroles_core::secrets::SecretError::Unavailable("the store is down".into())),
            _ => self.inner.stage(secret, credentials).await,
        }
    }
    async fn confirm(&self, _: &dbroles_core::secrets::Staged) -> Result<(), dbroles_core::secrets::SecretError> {
        if self.cut == Cut::Death {
            std::future::pending::<()>().await;
        }
        Err(dbroles_core::secrets::SecretError::Unavailable("the store is down".into()))
    }
    async fn read(
        &self,
        secret_id: &str,
    ) -> Result<Option<dbroles_core::secrets::RoleCredentials>, dbroles_core::secrets::SecretError> {
        self.inner.read(secret_id).await
    }
    async fn delete(&self, secret_id: &str) -> Result<(), dbroles_core::secrets::SecretError> {
        self.inner.delete(secret_id).await
    }
    async fn previous(
        &self,
        secret_id: &str,
    ) -> Result<Option<dbroles_core::secrets::RoleCredentials>, dbroles_core::secrets::SecretError> {
        self.inner.previous(secret_id).await
    }
    async fn pending(
        &self,
        secret_id: &str,
    ) -> Result<Option<(dbroles_core::secrets::Staged, dbroles_core::secrets::RoleCredentials)>, dbroles_core::secrets::SecretError>
    {
        self.inner.pending(secret_id).await
    }
}
