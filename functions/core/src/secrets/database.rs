//! The `database` provider: credentials kept in dbroles' own store. The create-
//! connections step copies them onto the resource's roles; no response shows them.

use std::sync::Arc;

use async_trait::async_trait;
use secrecy::ExposeSecret;

use super::*;
use crate::store::CredentialStore;

#[derive(Clone)]
pub struct DatabaseSecrets {
    store: Arc<dyn CredentialStore>,
}

impl DatabaseSecrets {
    pub fn new(store: Arc<dyn CredentialStore>) -> Self {
        Self { store }
    }
}

fn pending(secret_id: &str) -> String {
    format!("pending/{secret_id}")
}

fn failed(error: crate::store::StoreError) -> SecretError {
    match error {
        crate::store::StoreError::Unavailable(_) => SecretError::Unavailable(error.to_string()),
        other => SecretError::Failed(other.to_string()),
    }
}

#[async_trait]
impl SecretStore for DatabaseSecrets {
    fn provider(&self) -> SecretsProvider {
        SecretsProvider::Database
    }

    /// `<org>/<server arn>/<user>`: each organisation's credentials apart.
    fn secret_id(&self, secret: &SecretRef) -> String {
        format!("{}/{}/{}", secret.org, secret.instance_arn, secret.user)
    }

    async fn stage(&self, secret: &SecretRef, credentials: &RoleCredentials) -> Result<Staged, SecretError> {
        let secret_id = self.secret_id(secret);
        self.store.put_credential(&pending(&secret_id), credentials.to_secret_json().expose_secret()).await.map_err(failed)?;
        Ok(Staged { secret_id, version: None })
    }

    async fn confirm(&self, staged: &Staged) -> Result<(), SecretError> {
        let value = self
            .store
            .get_credential(&pending(&staged.secret_id))
            .await
            .map_err(failed)?
            .ok_or_else(|| SecretError::Failed(format!("no staged credential for {}", staged.secret_id)))?;
        self.store.put_credential(&staged.secret_id, &value).await.map_err(failed)
    }

    async fn read(&self, secret_id: &str) -> Result<Option<RoleCredentials>, SecretError> {
        let value = self.store.get_credential(secret_id).await.map_err(failed)?;
        value.map(|text| RoleCredentials::from_secret_json(&text)).transpose()
    }

    async fn pending(&self, secret_id: &str) -> Result<Option<(Staged, RoleCredentials)>, SecretError> {
        let staged = self.store.get_credential(&pending(secret_id)).await.map_err(failed)?;
        let current = self.store.get_credential(secret_id).await.map_err(failed)?;
        match staged {
            Some(staged) if Some(&staged) != current.as_ref() => {
                let credentials = RoleCredentials::from_secret_json(&staged)?;
                Ok(Some((Staged { secret_id: secret_id.to_string(), version: None }, credentials)))
            }
            _ => Ok(None),
        }
    }
}
