//! HashiCorp Vault, KV version 2, over its HTTP API.
//!
//! The credentials of a role go to `<secret_id><user>_<host>`, where `secret_id`
//! (seed 002's `vault_provider.secret_id`, e.g. `dbsecrets/data/`) names the
//! mount and its `data/` segment: `POST /v1/dbsecrets/data/hoop_ro_db.example.com`
//! with `{"data": {...}}`. KV v2 keeps every version, so staging is writing a
//! new version (the previous one still holds the password the database has);
//! confirming records the proven version in the secret's `custom_metadata`.

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::*;

#[derive(Clone)]
pub struct VaultSecrets {
    http: reqwest::Client,
    address: String,
    token: SecretString,
    namespace: Option<String>,
    secret_id: String,
}

impl VaultSecrets {
    pub fn new(address: &str, token: SecretString, namespace: Option<String>, secret_id: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .expect("a reqwest client with rustls builds");
        Self {
            http,
            address: address.trim_end_matches('/').to_string(),
            token,
            namespace,
            secret_id: secret_id.trim_start_matches('/').to_string(),
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut request =
            self.http.request(method, format!("{}/v1/{path}", self.address)).header("X-Vault-Token", self.token.expose_secret());
        if let Some(namespace) = &self.namespace {
            request = request.header("X-Vault-Namespace", namespace);
        }
        request
    }

    /// `mount/data/path` → `mount/metadata/path`.
    fn metadata_path(path: &str) -> String {
        path.replacen("/data/", "/metadata/", 1)
    }
}

async fn check(what: &str, response: Result<reqwest::Response, reqwest::Error>) -> Result<reqwest::Response, SecretError> {
    // No answer (refused, reset, timed out): Vault may be back in a moment.
    let response = response.map_err(|e| SecretError::Unavailable(format!("{what}: {e}")))?;
    let status = response.status();
    if status.is_success() || status == reqwest::StatusCode::NOT_FOUND {
        return Ok(response);
    }
    // Vault answers {"errors": [...]}; it never echoes the token or the data.
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let errors = body["errors"].as_array().map(|e| e.iter().filter_map(|e| e.as_str()).collect::<Vec<_>>().join("; "));
    let detail = format!("{what}: Vault answered {status}{}", errors.map(|e| format!(": {e}")).unwrap_or_default());
    if status == reqwest::StatusCode::FORBIDDEN {
        Err(SecretError::AccessDenied(detail))
    } else if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        Err(SecretError::Unavailable(detail))
    } else {
        Err(SecretError::Failed(detail))
    }
}

#[async_trait]
impl SecretStore for VaultSecrets {
    fn provider(&self) -> SecretsProvider {
        SecretsProvider::Vault
    }

    fn secret_id(&self, secret: &SecretRef) -> String {
        format!("{}{}_{}", self.secret_id, secret.user, secret.host)
    }

    async fn stage(&self, secret: &SecretRef, credentials: &RoleCredentials) -> Result<Staged, SecretError> {
        let path = self.secret_id(secret);
        let data: serde_json::Value =
            serde_json::from_str(credentials.to_secret_json().expose_secret()).map_err(|e| SecretError::Failed(e.to_string()))?;
        let what = format!("writing {path}");
        let response =
            check(&what, self.request(reqwest::Method::POST, &path).json(&json!({ "data": data })).send().await).await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(SecretError::Failed(format!("{what}: Vault answered 404 (is a KV v2 engine mounted there?)")));
        }
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let version = body["data"]["version"].as_u64().map(|v| v.to_string());
        Ok(Staged { secret_id: path, version })
    }

    async fn confirm(&self, staged: &Staged) -> Result<(), SecretError> {
        let path = Self::metadata_path(&staged.secret_id);
        let body = json!({ "custom_metadata": {
            "dbroles_confirmed_version": staged.version.clone().unwrap_or_default(),
            "managed_by": "dbroles",
        }});
        check(&format!("confirming {}", staged.secret_id), self.request(reqwest::Method::POST, &path).json(&body).send().await)
            .await?;
        Ok(())
    }

    async fn read(&self, secret_id: &str) -> Result<Option<RoleCredentials>, SecretError> {
        let response = check(&format!("reading {secret_id}"), self.request(reqwest::Method::GET, secret_id).send().await).await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body: serde_json::Value = response.json().await.map_err(|e| SecretError::Failed(e.to_string()))?;
        RoleCredentials::from_secret_json(&body["data"]["data"].to_string()).map(Some)
    }
}
