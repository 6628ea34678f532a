//! HashiCorp Vault, KV version 2, over its HTTP API.
//!
//! The credentials of a role go to `<secret_id><user>_<host>`, where `secret_id`
//! (seed 002's `vault_provider.secret_id`, e.g. `dbsecrets/data/`) names the
//! mount and its `data/` segment: `POST /v1/dbsecrets/data/hoop_ro_db.example.com`
//! with `{"data": {...}}`.
//!
//! Consumers read the latest version of that path, so a new password is never
//! written there first: it is staged at `<mount>/data/dbroles-staged/<path>`,
//! where consumers do not look, and written to the consumers' path only after a
//! login proved it, with check-and-set on the version read just before (a write
//! in between is refused, not overwritten). The next run finds a staged password
//! newer than the consumers' and promotes it if it logs in.

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::*;

/// The folder of a mount where staged passwords wait.
pub const STAGED: &str = "dbroles-staged";

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

    /// `mount/data/path` → `mount/data/dbroles-staged/path`: where new passwords wait.
    fn staged_path(path: &str) -> String {
        path.replacen("/data/", &format!("/data/{STAGED}/"), 1)
    }

    /// The data at a KV v2 path, and its version; `None` if there is none.
    async fn get(&self, path: &str) -> Result<Option<(RoleCredentials, u64)>, SecretError> {
        self.get_version(path, None).await
    }

    /// The data of a version of a KV v2 path (the latest without one); `None` if there is none, or it was deleted.
    async fn get_version(&self, path: &str, version: Option<u64>) -> Result<Option<(RoleCredentials, u64)>, SecretError> {
        let query = version.map(|version| format!("?version={version}")).unwrap_or_default();
        let request = self.request(reqwest::Method::GET, &format!("{path}{query}"));
        let response = check(&format!("reading {path}"), request.send().await).await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body: serde_json::Value = response.json().await.map_err(|e| SecretError::Failed(e.to_string()))?;
        if body["data"]["data"].is_null() {
            return Ok(None);
        }
        let version = body["data"]["metadata"]["version"].as_u64().unwrap_or(0);
        Ok(Some((RoleCredentials::from_secret_json(&body["data"]["data"].to_string())?, version)))
    }

    /// Writes a new version of `path`; with `cas`, only if the latest version is that one (0: none yet).
    async fn put(&self, path: &str, credentials: &RoleCredentials, cas: Option<u64>) -> Result<u64, SecretError> {
        let data: serde_json::Value =
            serde_json::from_str(credentials.to_secret_json().expose_secret()).map_err(|e| SecretError::Failed(e.to_string()))?;
        let body = match cas {
            Some(version) => json!({ "options": { "cas": version }, "data": data }),
            None => json!({ "data": data }),
        };
        let what = format!("writing {path}");
        let response = check(&what, self.request(reqwest::Method::POST, path).json(&body).send().await).await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(SecretError::Failed(format!("{what}: Vault answered 404 (is a KV v2 engine mounted there?)")));
        }
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        Ok(body["data"]["version"].as_u64().unwrap_or(0))
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
        let version = self.put(&Self::staged_path(&path), credentials, None).await?;
        Ok(Staged { secret_id: path, version: Some(version.to_string()) })
    }

    async fn confirm(&self, staged: &Staged) -> Result<(), SecretError> {
        let path = &staged.secret_id;
        let (credentials, _) = self
            .get(&Self::staged_path(path))
            .await?
            .ok_or_else(|| SecretError::Failed(format!("no staged credentials for {path}")))?;
        let current = self.get(path).await?;
        if current.as_ref().is_some_and(|(now, _)| now.password.expose_secret() == credentials.password.expose_secret()) {
            return Ok(());
        }
        let version = self.put(path, &credentials, Some(current.map_or(0, |(_, version)| version))).await?;
        let body = json!({ "custom_metadata": { "dbroles_confirmed_version": version.to_string(), "managed_by": "dbroles" }});
        check(
            &format!("confirming {path}"),
            self.request(reqwest::Method::POST, &Self::metadata_path(path)).json(&body).send().await,
        )
        .await?;
        Ok(())
    }

    async fn pending(&self, secret_id: &str) -> Result<Option<(Staged, RoleCredentials)>, SecretError> {
        let Some((staged, version)) = self.get(&Self::staged_path(secret_id)).await? else { return Ok(None) };
        let current = self.get(secret_id).await?;
        match current {
            Some((now, _)) if now.password.expose_secret() == staged.password.expose_secret() => Ok(None),
            _ => Ok(Some((Staged { secret_id: secret_id.to_string(), version: Some(version.to_string()) }, staged))),
        }
    }

    async fn read(&self, secret_id: &str) -> Result<Option<RoleCredentials>, SecretError> {
        Ok(self.get(secret_id).await?.map(|(credentials, _)| credentials))
    }

    /// Every version and the metadata, of the consumers' path and the staged one.
    async fn delete(&self, secret_id: &str) -> Result<(), SecretError> {
        for path in [Self::staged_path(secret_id), secret_id.to_string()] {
            let metadata = Self::metadata_path(&path);
            check(&format!("deleting {path}"), self.request(reqwest::Method::DELETE, &metadata).send().await).await?;
        }
        Ok(())
    }

    /// The version before the latest: only `confirm` writes the consumers' path.
    async fn previous(&self, secret_id: &str) -> Result<Option<RoleCredentials>, SecretError> {
        let Some((_, latest)) = self.get(secret_id).await? else { return Ok(None) };
        if latest < 2 {
            return Ok(None);
        }
        Ok(self.get_version(secret_id, Some(latest - 1)).await?.map(|(credentials, _)| credentials))
    }
}
