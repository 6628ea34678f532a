//! AWS Secrets Manager: one secret per role of a database server,
//! `<prefix>/<account>/<region>/<server id>/<user>` (an Aurora cluster and its
//! instances share one; the same name in two accounts gets two), tagged
//! `dbroles:managed=true` with the job and the server. A secret of that name that
//! dbroles did not create is never written. New credentials are put as
//! `AWSPENDING` and moved to `AWSCURRENT` once the role has logged in with them.

use async_trait::async_trait;
use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::types::Tag;
use aws_sdk_secretsmanager::Client;
use secrecy::ExposeSecret;

use super::*;

#[derive(Clone)]
pub struct AwsSecrets {
    client: Client,
    prefix: String,
}

fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(what: &str, error: SdkError<E, HttpResponse>) -> SecretError {
    crate::aws::classify(what, error, [SecretError::AccessDenied, SecretError::Unavailable, SecretError::Failed])
}

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

impl AwsSecrets {
    pub fn new(client: Client, prefix: impl Into<String>) -> Self {
        Self { client, prefix: prefix.into().trim_end_matches('/').to_string() }
    }

    /// Creates the secret, with no value yet, if it does not exist; refuses one dbroles did not create.
    async fn ensure(&self, secret: &SecretRef, name: &str) -> Result<(), SecretError> {
        let tags = [
            tag(MANAGED_TAG, "true"),
            tag("dbroles:org", &secret.org),
            tag("dbroles:instance-arn", &secret.instance_arn),
            tag("dbroles:job-id", &secret.job_id),
        ];
        let created = self
            .client
            .create_secret()
            .name(name)
            .description(format!("dbroles credentials of {} on {}", secret.user, secret.instance_arn))
            .set_tags(Some(tags.to_vec()))
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            // A role retired and provisioned again within the recovery window: its secret comes back.
            Err(error) if deleted(&error) => self.adopt(name, &tags[2..]).await,
            Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_exists_exception()) => {
                self.adopt(name, &tags[2..]).await
            }
            Err(error) => Err(classify(&format!("creating {name}"), error)),
        }
    }

    /// Takes up a secret of the name that exists: only if dbroles created it, restored
    /// if it was deleted within its recovery window, and tagged with the job.
    async fn adopt(&self, name: &str, tags: &[Tag]) -> Result<(), SecretError> {
        let described =
            self.client.describe_secret().secret_id(name).send().await.map_err(|e| classify(&format!("reading {name}"), e))?;
        let ours = described.tags().iter().any(|t| t.key() == Some(MANAGED_TAG) && t.value() == Some("true"));
        if !ours {
            return Err(SecretError::NotOurs(format!("the secret {name}")));
        }
        if described.deleted_date().is_some() {
            self.client.restore_secret().secret_id(name).send().await.map_err(|e| classify(&format!("restoring {name}"), e))?;
        }
        self.client
            .tag_resource()
            .secret_id(name)
            .set_tags(Some(tags.to_vec()))
            .send()
            .await
            .map_err(|e| classify(&format!("tagging {name}"), e))?;
        Ok(())
    }
}

impl AwsSecrets {
    /// The version with `stage`, if the secret and the version exist.
    async fn read_stage(&self, secret_id: &str, stage: &str) -> Result<Option<RoleCredentials>, SecretError> {
        match self.client.get_secret_value().secret_id(secret_id).version_stage(stage).send().await {
            Ok(out) => RoleCredentials::from_secret_json(out.secret_string().unwrap_or_default()).map(Some),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => Ok(None),
            // Deleted (a retired role) and still in its recovery window: nothing to read.
            Err(error) if deleted(&error) => Ok(None),
            Err(error) => Err(classify(&format!("reading {secret_id}"), error)),
        }
    }
}

/// Secrets Manager refused because the secret is scheduled for deletion (an
/// `InvalidRequestException` whose message says so, whatever the operation).
fn deleted<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> bool {
    error.code() == Some("InvalidRequestException")
        && error.message().is_some_and(|message| message.contains("deletion") || message.contains("deleted"))
}

/// The days a deleted secret can be restored: Secrets Manager's shortest window.
pub const RECOVERY_DAYS: i64 = 7;

/// The tag that marks the secrets dbroles created.
pub const MANAGED_TAG: &str = "dbroles:managed";

#[async_trait]
impl SecretStore for AwsSecrets {
    fn provider(&self) -> SecretsProvider {
        SecretsProvider::AwsSecretsManager
    }

    fn secret_id(&self, secret: &SecretRef) -> String {
        match secret.instance_arn.parse::<crate::model::request::InstanceArn>() {
            Ok(arn) => format!("{}/{}/{}/{}/{}", self.prefix, arn.account, arn.region, secret.instance_id, secret.user),
            Err(_) => format!("{}/{}/{}", self.prefix, secret.instance_id, secret.user),
        }
    }

    async fn stage(&self, secret: &SecretRef, credentials: &RoleCredentials) -> Result<Staged, SecretError> {
        let name = self.secret_id(secret);
        self.ensure(secret, &name).await?;
        let out = self
            .client
            .put_secret_value()
            .secret_id(&name)
            .secret_string(credentials.to_secret_json().expose_secret())
            .client_request_token(uuid::Uuid::new_v4().to_string())
            .version_stages("AWSPENDING")
            .send()
            .await
            .map_err(|e| classify(&format!("storing {name}"), e))?;
        Ok(Staged { secret_id: name, version: out.version_id().map(str::to_string) })
    }

    async fn confirm(&self, staged: &Staged) -> Result<(), SecretError> {
        let name = &staged.secret_id;
        let described =
            self.client.describe_secret().secret_id(name).send().await.map_err(|e| classify(&format!("reading {name}"), e))?;
        let current = described.version_ids_to_stages().and_then(|versions| {
            versions.iter().find(|(_, stages)| stages.iter().any(|s| s == "AWSCURRENT")).map(|(id, _)| id.clone())
        });
        if current.is_some() && current == staged.version {
            return Ok(());
        }
        self.client
            .update_secret_version_stage()
            .secret_id(name)
            .version_stage("AWSCURRENT")
            .set_move_to_version_id(staged.version.clone())
            .set_remove_from_version_id(current)
            .send()
            .await
            .map_err(|e| classify(&format!("confirming {name}"), e))?;
        Ok(())
    }

    async fn pending(&self, secret_id: &str) -> Result<Option<(Staged, RoleCredentials)>, SecretError> {
        let described = match self.client.describe_secret().secret_id(secret_id).send().await {
            Ok(described) if described.deleted_date().is_some() => return Ok(None),
            Ok(described) => described,
            Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => return Ok(None),
            Err(error) => return Err(classify(&format!("reading {secret_id}"), error)),
        };
        let staged = described.version_ids_to_stages().and_then(|versions| {
            let only_pending =
                |stages: &Vec<String>| stages.iter().any(|s| s == "AWSPENDING") && !stages.iter().any(|s| s == "AWSCURRENT");
            versions.iter().find(|(_, stages)| only_pending(stages)).map(|(id, _)| id.clone())
        });
        let Some(version) = staged else { return Ok(None) };
        let out = self
            .client
            .get_secret_value()
            .secret_id(secret_id)
            .version_id(&version)
            .send()
            .await
            .map_err(|e| classify(&format!("reading {secret_id}"), e))?;
        let credentials = RoleCredentials::from_secret_json(out.secret_string().unwrap_or_default())?;
        Ok(Some((Staged { secret_id: secret_id.to_string(), version: Some(version) }, credentials)))
    }

    async fn read(&self, secret_id: &str) -> Result<Option<RoleCredentials>, SecretError> {
        // Naming the stage is what AWS does by default; moto needs it said.
        self.read_stage(secret_id, "AWSCURRENT").await
    }

    /// Scheduled for deletion after Secrets Manager's shortest recovery window (7
    /// days): a job on the same server within it restores the secret ([`AwsSecrets::ensure`]).
    async fn delete(&self, secret_id: &str) -> Result<(), SecretError> {
        match self.client.delete_secret().secret_id(secret_id).recovery_window_in_days(RECOVERY_DAYS).send().await {
            Ok(_) => Ok(()),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => Ok(()),
            // Deleted already, by an earlier revoke.
            Err(error) if deleted(&error) => Ok(()),
            Err(error) => Err(classify(&format!("deleting {secret_id}"), error)),
        }
    }

    /// `AWSPREVIOUS`, which Secrets Manager moves to the old version when `confirm` moves `AWSCURRENT`.
    async fn previous(&self, secret_id: &str) -> Result<Option<RoleCredentials>, SecretError> {
        self.read_stage(secret_id, "AWSPREVIOUS").await
    }
}
