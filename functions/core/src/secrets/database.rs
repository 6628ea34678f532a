//! The `database` provider: credentials kept in dbroles' own store, each value
//! sealed (encrypted with KMS on AWS, [`super::kms`]). The create-connections step
//! copies them onto the resource's roles; no response shows them.

use std::sync::Arc;

use async_trait::async_trait;
use secrecy::ExposeSecret;

use super::kms::Sealer;
use super::*;
use crate::store::CredentialStore;

#[derive(Clone)]
pub struct DatabaseSecrets {
    store: Arc<dyn CredentialStore>,
    /// Encrypts every value stored; `None` locally, where the store is a private file.
    sealer: Option<Arc<dyn Sealer>>,
}

impl DatabaseSecrets {
    pub fn new(store: Arc<dyn CredentialStore>) -> Self {
        Self { store, sealer: None }
    }

    /// Every value stored sealed by `sealer`, and opened by it when read.
    pub fn sealed_with(self, sealer: Arc<dyn Sealer>) -> Self {
        Self { sealer: Some(sealer), ..self }
    }

    async fn put(&self, id: &str, value: &str) -> Result<(), SecretError> {
        let value = match &self.sealer {
            Some(sealer) => sealer.seal(id, value).await?,
            None => value.to_string(),
        };
        self.store.put_credential(id, &value).await.map_err(failed)
    }

    async fn get(&self, id: &str) -> Result<Option<String>, SecretError> {
        let Some(value) = self.store.get_credential(id).await.map_err(failed)? else { return Ok(None) };
        match &self.sealer {
            Some(sealer) => sealer.open(id, &value).await.map(Some),
            None => Ok(Some(value)),
        }
    }
}

fn pending(secret_id: &str) -> String {
    format!("pending/{secret_id}")
}

fn previous(secret_id: &str) -> String {
    format!("previous/{secret_id}")
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
        self.put(&pending(&secret_id), credentials.to_secret_json().expose_secret()).await?;
        Ok(Staged { secret_id, version: None })
    }

    async fn confirm(&self, staged: &Staged) -> Result<(), SecretError> {
        let value = self
            .get(&pending(&staged.secret_id))
            .await?
            .ok_or_else(|| SecretError::Failed(format!("no staged credential for {}", staged.secret_id)))?;
        match self.get(&staged.secret_id).await? {
            Some(current) if current == value => return Ok(()),
            Some(current) => self.put(&previous(&staged.secret_id), &current).await?,
            None => {}
        }
        self.put(&staged.secret_id, &value).await
    }

    async fn delete(&self, secret_id: &str) -> Result<(), SecretError> {
        for id in [pending(secret_id), previous(secret_id), secret_id.to_string()] {
            self.store.delete_credential(&id).await.map_err(failed)?;
        }
        Ok(())
    }

    async fn previous(&self, secret_id: &str) -> Result<Option<RoleCredentials>, SecretError> {
        let value = self.get(&previous(secret_id)).await?;
        value.map(|text| RoleCredentials::from_secret_json(&text)).transpose()
    }

    async fn read(&self, secret_id: &str) -> Result<Option<RoleCredentials>, SecretError> {
        let value = self.get(secret_id).await?;
        value.map(|text| RoleCredentials::from_secret_json(&text)).transpose()
    }

    async fn pending(&self, secret_id: &str) -> Result<Option<(Staged, RoleCredentials)>, SecretError> {
        let staged = self.get(&pending(secret_id)).await?;
        let current = self.get(secret_id).await?;
        match staged {
            Some(staged) if Some(&staged) != current.as_ref() => {
                let credentials = RoleCredentials::from_secret_json(&staged)?;
                Ok(Some((Staged { secret_id: secret_id.to_string(), version: None }, credentials)))
            }
            _ => Ok(None),
        }
    }
}
