//! The local inventory: instances listed in `dbroles.local.toml`.
//!
//! ```toml
//! [[instances]]
//! arn = "arn:aws:rds:us-east-1:000000000000:db:postgres"
//! engine = "postgres"
//! host = "127.0.0.1"
//! port = 5432
//! master_user = "postgres"
//! master_password_env = "PGPASSWORD"   # or master_password = "..."
//! ```
//!
//! The deployment's own account is [`LOCAL_ACCOUNT`]. An instance in another
//! account is reached once an organisation registered that account with a role
//! the file lists as trusting the organisation's `ExternalId`, as an IAM trust
//! policy would:
//!
//! ```toml
//! [[roles]]
//! arn = "arn:aws:iam::111111111111:role/dbroles"
//! external_id = "dbroles-..."   # the organisation's: GET /dbroles/accounts shows it
//! ```

use std::path::Path;

use async_trait::async_trait;
use secrecy::SecretString;
use serde::Deserialize;

use super::*;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalInstance {
    pub arn: String,
    pub engine: String,
    pub host: String,
    pub port: u16,
    pub master_user: String,
    #[serde(default)]
    pub master_password: Option<String>,
    #[serde(default)]
    pub master_password_env: Option<String>,
    #[serde(default)]
    pub db_name: Option<String>,
    #[serde(default)]
    pub tags: Vec<DbTag>,
    /// The server's immutable id, as RDS's `DbiResourceId`; by default one derived
    /// from the ARN. Give another to play an instance deleted and created again.
    #[serde(default)]
    pub resource_id: Option<String>,
}

impl LocalInstance {
    /// The instance tagged `dbroles:org=<org>`: in the home account, what an
    /// organisation's first job on it needs.
    pub fn tagged_for(mut self, org: &str) -> Self {
        self.tags.retain(|tag| tag.key != crate::model::account::ORG_TAG);
        self.tags.push(DbTag { key: crate::model::account::ORG_TAG.into(), value: org.into() });
        self
    }

    /// The resource id: the one given, or `db-` and 26 characters derived from the ARN.
    pub fn resource_id(&self) -> String {
        use sha2::{Digest, Sha256};
        self.resource_id.clone().unwrap_or_else(|| {
            let digest = hex::encode_upper(Sha256::digest(format!("dbroles/local-resource/{}", self.arn).as_bytes()));
            format!("db-{}", &digest[..26])
        })
    }

    /// An instance on 127.0.0.1 whose master user has an empty password (the machine's trust set-up).
    pub fn on_loopback(arn: &str, engine: &str, port: u16, master_user: &str) -> Self {
        Self {
            arn: arn.into(),
            engine: engine.into(),
            host: "127.0.0.1".into(),
            port,
            master_user: master_user.into(),
            master_password: Some(String::new()),
            master_password_env: None,
            db_name: None,
            tags: Vec::new(),
            resource_id: None,
        }
    }
}

/// A role in another account and the `ExternalId` its trust policy requires.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalRole {
    pub arn: String,
    pub external_id: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    instances: Vec<LocalInstance>,
    #[serde(default)]
    roles: Vec<LocalRole>,
}

#[derive(Clone, Debug)]
pub struct LocalInventory {
    instances: Vec<LocalInstance>,
    roles: Vec<LocalRole>,
}

/// The organisation of the local server (`dbroles run`, `dbroles serve`).
pub const LOCAL_ORG: &str = "local";

/// The account of the local instances: the local deployment's own.
pub const LOCAL_ACCOUNT: &str = "000000000000";
/// The local deployment's own region.
pub const LOCAL_REGION: &str = "us-east-1";

pub const LOCAL_POSTGRES_ARN: &str = "arn:aws:rds:us-east-1:000000000000:db:postgres";
pub const LOCAL_MARIADB_ARN: &str = "arn:aws:rds:us-east-1:000000000000:db:mariadb";

impl LocalInventory {
    pub fn new(instances: Vec<LocalInstance>) -> Result<Self, InventoryError> {
        for (i, instance) in instances.iter().enumerate() {
            instance.arn.parse::<InstanceArn>().map_err(|e| InventoryError::Failed(format!("instances[{i}].arn: {e}")))?;
            if instance.master_password.is_some() && instance.master_password_env.is_some() {
                return Err(InventoryError::Failed(format!(
                    "instances[{i}]: give master_password or master_password_env, not both"
                )));
            }
        }
        Ok(Self { instances, roles: Vec::new() })
    }

    /// The roles other accounts have, each trusting one `ExternalId`.
    pub fn with_roles(self, roles: Vec<LocalRole>) -> Self {
        Self { roles, ..self }
    }

    /// The machine's PostgreSQL and MariaDB, as the local server knows them with
    /// no file: tagged for the organisation [`LOCAL_ORG`], as the home account's
    /// instances must be before an organisation's first job ([`crate::lifecycle::accounts::claim`]).
    pub fn defaults() -> Self {
        let local = |arn, engine, port, user| {
            let tags = vec![DbTag { key: "environment".into(), value: "local".into() }];
            LocalInstance { tags, ..LocalInstance::on_loopback(arn, engine, port, user) }.tagged_for(LOCAL_ORG)
        };
        Self {
            instances: vec![
                local(LOCAL_POSTGRES_ARN, "postgres", 5432, "postgres"),
                local(LOCAL_MARIADB_ARN, "mariadb", 3306, "root"),
            ],
            roles: Vec::new(),
        }
    }

    pub fn load(path: &Path) -> Result<Self, InventoryError> {
        let in_file = |e: &dyn std::fmt::Display| InventoryError::Failed(format!("{}: {e}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| in_file(&e))?;
        let file: File = toml::from_str(&text).map_err(|e| in_file(&e))?;
        Ok(Self::new(file.instances).map_err(|e| in_file(&e))?.with_roles(file.roles))
    }

    /// Every region the listed instances are in.
    pub fn regions(&self) -> Vec<String> {
        let regions = self.instances.iter().filter_map(|instance| instance.arn.parse::<InstanceArn>().ok()).map(|arn| arn.region);
        regions.collect::<std::collections::BTreeSet<_>>().into_iter().collect()
    }

    fn find(&self, arn: &str) -> Option<&LocalInstance> {
        self.instances.iter().find(|instance| instance.arn == arn)
    }
}

#[async_trait]
impl Inventory for LocalInventory {
    async fn home_account(&self) -> Result<String, InventoryError> {
        Ok(LOCAL_ACCOUNT.to_string())
    }

    fn home_region(&self) -> String {
        LOCAL_REGION.to_string()
    }

    /// As STS would: the role exists and its trust policy names this `ExternalId`.
    async fn verify(&self, access: &Access) -> Result<String, InventoryError> {
        let Some(role_arn) = &access.role_arn else { return self.caller_arn(access).await };
        match self.roles.iter().find(|role| role.arn == *role_arn) {
            Some(role) if role.external_id == access.external_id => self.caller_arn(access).await,
            Some(_) => {
                Err(InventoryError::AccessDenied(format!("{role_arn} does not trust the ExternalId {}", access.external_id)))
            }
            None => Err(InventoryError::AccessDenied(format!("no role {role_arn} is in the local inventory"))),
        }
    }

    async fn list(&self, access: &Access, region: &str) -> Result<Vec<Listed>, InventoryError> {
        self.verify(access).await?;
        let listed = self.instances.iter().filter(|local| {
            local.arn.parse::<InstanceArn>().is_ok_and(|arn| arn.account == access.account && arn.region == region)
        });
        Ok(listed
            .map(|local| Listed { arn: local.arn.clone(), engine: local.engine.clone(), tags: local.tags.clone() })
            .collect())
    }

    async fn describe(&self, arn: &InstanceArn, access: &Access) -> Result<Option<Instance>, InventoryError> {
        if arn.account != access.account {
            return Err(InventoryError::AccessDenied(format!("{arn} is not in account {}", access.account)));
        }
        Ok(self.find(arn.as_str()).map(|local| Instance {
            arn: local.arn.clone(),
            kind: arn.kind,
            identifier: arn.id.clone(),
            engine: local.engine.clone(),
            host: local.host.clone(),
            port: local.port,
            endpoint_host: local.host.clone(),
            endpoint_port: local.port,
            db_name: local.db_name.clone().unwrap_or_default(),
            tags: local.tags.clone(),
            master_user: local.master_user.clone(),
            master_secret_arn: None,
            security_groups: Vec::new(),
            status: "available".into(),
            vpc_id: None,
            cluster_arn: None,
            access: access.clone(),
            resource_id: local.resource_id(),
        }))
    }

    async fn master_credentials(&self, instance: &Instance) -> Result<MasterCredentials, InventoryError> {
        let local = self
            .find(&instance.arn)
            .ok_or_else(|| InventoryError::Failed(format!("{} is not in the local inventory", instance.arn)))?;
        let password = match (&local.master_password, &local.master_password_env) {
            (_, Some(var)) => crate::config::named_variable(var)
                .ok_or_else(|| InventoryError::Failed(format!("the variable {var} (master_password_env) is not set")))?,
            (Some(password), None) => password.clone(),
            (None, None) => String::new(),
        };
        Ok(MasterCredentials { user: local.master_user.clone(), password: SecretString::from(password), pending: None })
    }

    async fn caller_arn(&self, access: &Access) -> Result<String, InventoryError> {
        Ok(access.role_arn.clone().unwrap_or_else(|| format!("arn:aws:iam::{}:root", access.account)))
    }

    async fn reset_master_password(&self, instance: &Instance) -> Result<(), InventoryError> {
        Err(InventoryError::NotSupported(format!(
            "the local inventory cannot reset the master password of {}: set it in the instances file",
            instance.identifier
        )))
    }
}
