//! The `Inventory` port: finds a database instance by ARN and its master
//! credentials, in the account an organisation's [`Access`] reaches.

pub mod local;
pub mod rds;

use async_trait::async_trait;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::model::account::Access;
use crate::model::job::DbTag;
use crate::model::request::{ArnKind, InstanceArn};

/// What dbroles needs to know of an instance or an Aurora cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub arn: String,
    pub kind: ArnKind,
    pub identifier: String,
    pub engine: String,
    /// Where dbroles connects: the endpoint, or its override.
    pub host: String,
    pub port: u16,
    /// The instance's own endpoint, which stored credentials name.
    pub endpoint_host: String,
    pub endpoint_port: u16,
    pub db_name: String,
    pub tags: Vec<DbTag>,
    pub master_user: String,
    /// The RDS-managed master secret (`MasterUserSecret`), if the instance has one.
    pub master_secret_arn: Option<String>,
    pub security_groups: Vec<String>,
    pub status: String,
    /// The VPC the instance is in (for the security group of `default_security_group`).
    #[serde(default)]
    pub vpc_id: Option<String>,
    /// The Aurora cluster an instance belongs to.
    #[serde(default)]
    pub cluster_arn: Option<String>,
    /// How it was reached: later calls on the instance go the same way.
    #[serde(default)]
    pub access: Access,
    /// The database server's immutable id: the instance's `DbiResourceId`, or its
    /// Aurora cluster's `DbClusterResourceId` (for the cluster and its instances alike).
    #[serde(default)]
    pub resource_id: String,
}

impl Instance {
    /// The database server: the instance, or the Aurora cluster it belongs to.
    /// Jobs lock it, and role secrets are named after it.
    pub fn server_arn(&self) -> &str {
        self.cluster_arn.as_deref().unwrap_or(&self.arn)
    }
}

/// An instance or Aurora cluster as a listing finds it: what a fleet's selector
/// matches on. An instance of a cluster is listed as its cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Listed {
    pub arn: String,
    pub engine: String,
    pub tags: Vec<DbTag>,
}

#[derive(Clone, Debug)]
pub struct MasterCredentials {
    pub user: String,
    /// The password in force (the stored current one).
    pub password: SecretString,
    /// A password a reset staged and set, not yet promoted (a job cut short after
    /// `ModifyDBInstance`): tried first, and promoted if it logs in.
    pub pending: Option<SecretString>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InventoryError {
    #[error("access denied: {0}")]
    AccessDenied(String),
    #[error(
        "the instance has no RDS-managed master secret: enable it with `aws rds modify-db-instance --db-instance-identifier {0} --manage-master-user-password` (or modify-db-cluster for Aurora), or send aws.allow_master_password_reset: true"
    )]
    NoMasterSecret(String),
    /// Worth another attempt: throttling, a 5xx, a time-out.
    #[error("the instance inventory is unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Failed(String),
    #[error("{0}")]
    NotSupported(String),
}

#[async_trait]
pub trait Inventory: Send + Sync {
    /// The deployment's own account, reached with its own credentials.
    async fn home_account(&self) -> Result<String, InventoryError>;
    /// The deployment's own region: where a fleet job looks when it names none.
    fn home_region(&self) -> String;
    /// Proves that `access` reaches its account (assuming its role with its
    /// `ExternalId`): the identity dbroles becomes there.
    async fn verify(&self, access: &Access) -> Result<String, InventoryError>;
    /// Every standalone instance and Aurora cluster in `region` of the account `access` reaches.
    async fn list(&self, access: &Access, region: &str) -> Result<Vec<Listed>, InventoryError>;
    /// `None` if no such instance or cluster exists.
    async fn describe(&self, arn: &InstanceArn, access: &Access) -> Result<Option<Instance>, InventoryError>;
    /// The master user and password: `NoMasterSecret` if the instance has none dbroles can read.
    async fn master_credentials(&self, instance: &Instance) -> Result<MasterCredentials, InventoryError>;
    /// The ARN of the identity dbroles acts as through `access` (the job's `account_arn`).
    async fn caller_arn(&self, access: &Access) -> Result<String, InventoryError>;
    /// Sets a new master password: first staged beside the stored one (which stays
    /// in force), then applied to the instance, which becomes `available` again
    /// after a while. A failed modification leaves the stored password in force.
    async fn reset_master_password(&self, instance: &Instance) -> Result<(), InventoryError>;
    /// Makes the staged master password the one in force, once the instance has it. `false` if none was staged.
    async fn promote_master_password(&self, _instance: &Instance) -> Result<bool, InventoryError> {
        Ok(false)
    }
}
