//! The RDS inventory: `DescribeDBInstances` / `DescribeDBClusters` by ARN, and the
//! master credentials from the RDS-managed secret.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_rds::error::{DisplayErrorContext, ProvideErrorMetadata};
use secrecy::SecretString;

use super::*;

#[derive(Clone)]
pub struct RdsInventory {
    rds: aws_sdk_rds::Client,
    secrets: aws_sdk_secretsmanager::Client,
    /// Endpoint host → `host:port` to connect to instead (emulators, tunnels).
    overrides: HashMap<String, String>,
}

fn classify<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    error: aws_sdk_rds::error::SdkError<E, R>,
) -> InventoryError {
    let code = error.as_service_error().and_then(|e| e.code()).unwrap_or_default().to_string();
    let text = DisplayErrorContext(&error).to_string();
    if code.contains("AccessDenied") || code.contains("UnauthorizedOperation") {
        InventoryError::AccessDenied(text)
    } else {
        InventoryError::Unavailable(text)
    }
}

fn tags(list: &[aws_sdk_rds::types::Tag]) -> Vec<DbTag> {
    list.iter()
        .map(|tag| DbTag { key: tag.key().unwrap_or_default().into(), value: tag.value().unwrap_or_default().into() })
        .collect()
}

impl RdsInventory {
    pub fn new(rds: aws_sdk_rds::Client, secrets: aws_sdk_secretsmanager::Client, overrides: HashMap<String, String>) -> Self {
        Self { rds, secrets, overrides }
    }

    fn endpoint(&self, host: &str, port: u16) -> (String, u16) {
        match self.overrides.get(host).and_then(|target| target.rsplit_once(':')) {
            Some((host, port)) => (host.to_string(), port.parse().unwrap_or(0)),
            None => (host.to_string(), port),
        }
    }

    async fn describe_instance(&self, arn: &InstanceArn) -> Result<Option<Instance>, InventoryError> {
        let out = match self.rds.describe_db_instances().db_instance_identifier(arn.as_str()).send().await {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_db_instance_not_found_fault()) => return Ok(None),
            Err(e) => return Err(classify(e)),
        };
        let Some(db) = out.db_instances().first() else { return Ok(None) };
        let endpoint = db.endpoint();
        let (host, port) = self.endpoint(
            endpoint.and_then(|e| e.address()).unwrap_or_default(),
            endpoint.and_then(|e| e.port()).unwrap_or_default() as u16,
        );
        Ok(Some(Instance {
            arn: db.db_instance_arn().unwrap_or(arn.as_str()).to_string(),
            kind: ArnKind::Db,
            identifier: db.db_instance_identifier().unwrap_or(&arn.id).to_string(),
            engine: db.engine().unwrap_or_default().to_string(),
            host,
            port,
            db_name: db.db_name().unwrap_or_default().to_string(),
            tags: tags(db.tag_list()),
            master_user: db.master_username().unwrap_or_default().to_string(),
            master_secret_arn: db.master_user_secret().and_then(|s| s.secret_arn()).map(str::to_string),
            security_groups: db
                .vpc_security_groups()
                .iter()
                .filter_map(|g| g.vpc_security_group_id())
                .map(str::to_string)
                .collect(),
            status: db.db_instance_status().unwrap_or_default().to_string(),
        }))
    }

    async fn describe_cluster(&self, arn: &InstanceArn) -> Result<Option<Instance>, InventoryError> {
        let out = match self.rds.describe_db_clusters().db_cluster_identifier(arn.as_str()).send().await {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_db_cluster_not_found_fault()) => return Ok(None),
            Err(e) => return Err(classify(e)),
        };
        let Some(cluster) = out.db_clusters().first() else { return Ok(None) };
        // The cluster endpoint is the writer's.
        let (host, port) = self.endpoint(cluster.endpoint().unwrap_or_default(), cluster.port().unwrap_or_default() as u16);
        Ok(Some(Instance {
            arn: cluster.db_cluster_arn().unwrap_or(arn.as_str()).to_string(),
            kind: ArnKind::Cluster,
            identifier: cluster.db_cluster_identifier().unwrap_or(&arn.id).to_string(),
            engine: cluster.engine().unwrap_or_default().to_string(),
            host,
            port,
            db_name: cluster.database_name().unwrap_or_default().to_string(),
            tags: tags(cluster.tag_list()),
            master_user: cluster.master_username().unwrap_or_default().to_string(),
            master_secret_arn: cluster.master_user_secret().and_then(|s| s.secret_arn()).map(str::to_string),
            security_groups: cluster
                .vpc_security_groups()
                .iter()
                .filter_map(|g| g.vpc_security_group_id())
                .map(str::to_string)
                .collect(),
            status: cluster.status().unwrap_or_default().to_string(),
        }))
    }
}

#[async_trait]
impl Inventory for RdsInventory {
    async fn describe(&self, arn: &InstanceArn) -> Result<Option<Instance>, InventoryError> {
        match arn.kind {
            ArnKind::Db => self.describe_instance(arn).await,
            ArnKind::Cluster => self.describe_cluster(arn).await,
        }
    }

    async fn master_credentials(&self, instance: &Instance) -> Result<MasterCredentials, InventoryError> {
        let secret_arn =
            instance.master_secret_arn.as_deref().ok_or_else(|| InventoryError::NoMasterSecret(instance.identifier.clone()))?;
        let out = self.secrets.get_secret_value().secret_id(secret_arn).send().await.map_err(|e| {
            let text = aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string();
            if text.contains("AccessDenied") {
                InventoryError::AccessDenied(format!("reading the master secret {secret_arn}: {text}"))
            } else {
                InventoryError::Unavailable(format!("reading the master secret {secret_arn}: {text}"))
            }
        })?;
        #[derive(serde::Deserialize)]
        struct Master {
            username: String,
            password: String,
        }
        let master: Master = serde_json::from_str(out.secret_string().unwrap_or_default()).map_err(|_| {
            InventoryError::Unavailable(format!("the master secret {secret_arn} is not JSON with username and password"))
        })?;
        Ok(MasterCredentials { user: master.username, password: SecretString::from(master.password) })
    }
}
