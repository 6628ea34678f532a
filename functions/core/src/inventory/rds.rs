//! The RDS inventory: `DescribeDBInstances` / `DescribeDBClusters` by ARN, the
//! master credentials from the RDS-managed secret (or the one dbroles set), and
//! `AssumeRole` into the role an organisation registered, with its `ExternalId`,
//! for instances in other accounts.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_rds::config::http::HttpResponse;
use aws_sdk_rds::error::{ProvideErrorMetadata, SdkError};
use secrecy::ExposeSecret;
use tokio::sync::OnceCell;

use super::*;
use crate::aws::Fault;

/// The RDS, Secrets Manager and STS clients of one account.
#[derive(Clone)]
struct Clients {
    rds: aws_sdk_rds::Client,
    secrets: aws_sdk_secretsmanager::Client,
    sts: aws_sdk_sts::Client,
}

impl Clients {
    fn new(config: &SdkConfig) -> Self {
        Self {
            rds: aws_sdk_rds::Client::new(config),
            secrets: aws_sdk_secretsmanager::Client::new(config),
            sts: aws_sdk_sts::Client::new(config),
        }
    }
}

/// `home` acting as `role_arn`, assumed with `external_id`.
pub async fn assumed(home: &SdkConfig, role_arn: &str, external_id: &str) -> SdkConfig {
    let provider = aws_config::sts::AssumeRoleProvider::builder(role_arn)
        .session_name("dbroles")
        .external_id(external_id)
        .configure(home)
        .build()
        .await;
    home.to_builder().credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(provider)).build()
}

pub struct RdsInventory {
    config: SdkConfig,
    home: Clients,
    home_account: OnceCell<String>,
    /// Where a master password dbroles set is kept: `<prefix><account>/<region>/<instance id>/master`.
    secret_prefix: String,
    /// Endpoint host → `host:port` to connect to instead (emulators, tunnels).
    overrides: HashMap<String, String>,
}

fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(
    what: &str,
    error: SdkError<E, HttpResponse>,
) -> InventoryError {
    crate::aws::classify(what, error, [InventoryError::AccessDenied, InventoryError::Unavailable, InventoryError::Failed])
}

fn tags(list: &[aws_sdk_rds::types::Tag]) -> Vec<DbTag> {
    list.iter()
        .map(|tag| DbTag { key: tag.key().unwrap_or_default().into(), value: tag.value().unwrap_or_default().into() })
        .collect()
}

impl RdsInventory {
    /// A cluster is `available` once it and its writer instance are: before that
    /// there is nothing to connect to (a cluster the tag trigger caught as it was created).
    async fn cluster_status(
        &self,
        rds: &aws_sdk_rds::Client,
        cluster: &aws_sdk_rds::types::DbCluster,
    ) -> Result<String, InventoryError> {
        let status = cluster.status().unwrap_or_default();
        if status != "available" {
            return Ok(status.to_string());
        }
        let writer = cluster.db_cluster_members().iter().find(|m| m.is_cluster_writer() == Some(true));
        let Some(writer) = writer.and_then(|m| m.db_instance_identifier()) else {
            return Ok("available, with no writer instance yet".to_string());
        };
        let out = rds.describe_db_instances().db_instance_identifier(writer).send().await;
        let writer_status = match out {
            Ok(out) => out.db_instances().first().and_then(|db| db.db_instance_status()).unwrap_or_default().to_string(),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_db_instance_not_found_fault()) => "no writer".to_string(),
            Err(e) => return Err(classify("DescribeDBInstances", e)),
        };
        Ok(match writer_status.as_str() {
            "available" => "available".to_string(),
            other => format!("available, its writer {writer} {other}"),
        })
    }

    pub fn new(config: &SdkConfig, overrides: HashMap<String, String>) -> Self {
        Self {
            config: config.clone(),
            home: Clients::new(config),
            home_account: OnceCell::new(),
            secret_prefix: "dbroles/".into(),
            overrides,
        }
    }

    pub fn with_secret_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.secret_prefix = prefix.into();
        self
    }

    fn endpoint(&self, host: &str, port: u16) -> (String, u16) {
        match self.overrides.get(host).and_then(|target| target.rsplit_once(':')) {
            Some((host, port)) => (host.to_string(), port.parse().unwrap_or(0)),
            None => (host.to_string(), port),
        }
    }

    async fn own_account(&self) -> Result<&str, InventoryError> {
        let account = self
            .home_account
            .get_or_try_init(|| async {
                let identity = self.home.sts.get_caller_identity().send().await.map_err(|e| classify("GetCallerIdentity", e))?;
                Ok::<_, InventoryError>(identity.account().unwrap_or_default().to_string())
            })
            .await?;
        Ok(account.as_str())
    }

    /// The clients `access` gives: the home ones, or the registered role's, assumed with the `ExternalId`.
    async fn clients(&self, access: &Access) -> Result<Clients, InventoryError> {
        match access.role_arn {
            None => self.config_for(access).await.map(|_| self.home.clone()),
            Some(_) => self.config_for(access).await.map(|config| Clients::new(&config)),
        }
    }

    /// The SDK configuration `access` gives: the deployment's own, or one that
    /// assumes the registered role with the `ExternalId`.
    async fn config_for(&self, access: &Access) -> Result<SdkConfig, InventoryError> {
        let Some(role_arn) = &access.role_arn else {
            return match access.account == self.own_account().await? {
                true => Ok(self.config.clone()),
                false => Err(InventoryError::AccessDenied(format!(
                    "account {} is not this deployment's: it is reached only through a registered role",
                    access.account
                ))),
            };
        };
        Ok(assumed(&self.config, role_arn, &access.external_id).await)
    }

    /// `<prefix><account>/<region>/<server id>/master`: one per database server, whatever the account.
    fn master_secret_name(&self, instance: &Instance) -> String {
        let server = instance.server_arn();
        match server.parse::<InstanceArn>() {
            Ok(arn) => format!("{}{}/{}/{}/master", self.secret_prefix, arn.account, arn.region, arn.id),
            Err(_) => format!("{}{}/master", self.secret_prefix, instance.identifier),
        }
    }

    async fn describe_instance(&self, arn: &InstanceArn, access: &Access) -> Result<Option<Instance>, InventoryError> {
        let rds = self.clients(access).await?.rds;
        let out = match rds.describe_db_instances().db_instance_identifier(arn.as_str()).send().await {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_db_instance_not_found_fault()) => return Ok(None),
            Err(e) => return Err(classify("DescribeDBInstances", e)),
        };
        let Some(db) = out.db_instances().first() else { return Ok(None) };
        let endpoint = db.endpoint();
        let endpoint_host = endpoint.and_then(|e| e.address()).unwrap_or_default().to_string();
        let endpoint_port = endpoint.and_then(|e| e.port()).unwrap_or_default() as u16;
        let (host, port) = self.endpoint(&endpoint_host, endpoint_port);
        // An Aurora instance's server is its cluster, whose resource id it carries.
        let resource_id = match db.db_cluster_identifier() {
            Some(cluster) => match rds.describe_db_clusters().db_cluster_identifier(cluster).send().await {
                Ok(out) => out.db_clusters().first().and_then(|c| c.db_cluster_resource_id()).unwrap_or_default().to_string(),
                Err(e) => return Err(classify("DescribeDBClusters", e)),
            },
            None => db.dbi_resource_id().unwrap_or_default().to_string(),
        };
        Ok(Some(Instance {
            arn: db.db_instance_arn().unwrap_or(arn.as_str()).to_string(),
            kind: ArnKind::Db,
            identifier: db.db_instance_identifier().unwrap_or(&arn.id).to_string(),
            engine: db.engine().unwrap_or_default().to_string(),
            host,
            port,
            endpoint_host,
            endpoint_port,
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
            vpc_id: db.db_subnet_group().and_then(|g| g.vpc_id()).map(str::to_string),
            cluster_arn: db
                .db_cluster_identifier()
                .map(|cluster| format!("arn:{}:rds:{}:{}:cluster:{cluster}", arn.partition, arn.region, arn.account)),
            access: access.clone(),
            resource_id,
        }))
    }

    async fn describe_cluster(&self, arn: &InstanceArn, access: &Access) -> Result<Option<Instance>, InventoryError> {
        let rds = self.clients(access).await?.rds;
        let out = match rds.describe_db_clusters().db_cluster_identifier(arn.as_str()).send().await {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_db_cluster_not_found_fault()) => return Ok(None),
            Err(e) => return Err(classify("DescribeDBClusters", e)),
        };
        let Some(cluster) = out.db_clusters().first() else { return Ok(None) };
        let vpc_id = match cluster.db_subnet_group() {
            Some(group) => rds
                .describe_db_subnet_groups()
                .db_subnet_group_name(group)
                .send()
                .await
                .ok()
                .and_then(|out| out.db_subnet_groups().first().and_then(|g| g.vpc_id()).map(str::to_string)),
            None => None,
        };
        // The cluster endpoint is the writer's.
        let endpoint_host = cluster.endpoint().unwrap_or_default().to_string();
        let endpoint_port = cluster.port().unwrap_or_default() as u16;
        let (host, port) = self.endpoint(&endpoint_host, endpoint_port);
        Ok(Some(Instance {
            arn: cluster.db_cluster_arn().unwrap_or(arn.as_str()).to_string(),
            kind: ArnKind::Cluster,
            identifier: cluster.db_cluster_identifier().unwrap_or(&arn.id).to_string(),
            engine: cluster.engine().unwrap_or_default().to_string(),
            host,
            port,
            endpoint_host,
            endpoint_port,
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
            status: self.cluster_status(&rds, cluster).await?,
            vpc_id,
            cluster_arn: None,
            access: access.clone(),
            resource_id: cluster.db_cluster_resource_id().unwrap_or_default().to_string(),
        }))
    }
}

#[async_trait]
impl Inventory for RdsInventory {
    async fn home_account(&self) -> Result<String, InventoryError> {
        self.own_account().await.map(str::to_string)
    }

    fn home_region(&self) -> String {
        self.config.region().map_or_else(|| "us-east-1".to_string(), |region| region.to_string())
    }

    async fn verify(&self, access: &Access) -> Result<String, InventoryError> {
        let sts = self.clients(access).await?.sts;
        let identity = sts.get_caller_identity().send().await.map_err(|e| classify("AssumeRole", e))?;
        match identity.account() {
            Some(account) if account == access.account => Ok(identity.arn().unwrap_or_default().to_string()),
            other => Err(InventoryError::AccessDenied(format!(
                "the role put dbroles in account {}, not {}",
                other.unwrap_or("(none)"),
                access.account
            ))),
        }
    }

    /// Paged `DescribeDBInstances` (instances of a cluster are left to it) and `DescribeDBClusters`.
    async fn list(&self, access: &Access, region: &str) -> Result<Vec<Listed>, InventoryError> {
        let config = self.config_for(access).await?.to_builder().region(aws_config::Region::new(region.to_string())).build();
        let rds = aws_sdk_rds::Client::new(&config);
        let mut listed = Vec::new();
        let mut marker = None;
        loop {
            let out = rds.describe_db_instances().set_marker(marker.take()).max_records(100).send().await;
            let out = out.map_err(|e| classify("DescribeDBInstances", e))?;
            let standalone = out.db_instances().iter().filter(|db| db.db_cluster_identifier().is_none());
            listed.extend(standalone.map(|db| Listed {
                arn: db.db_instance_arn().unwrap_or_default().to_string(),
                engine: db.engine().unwrap_or_default().to_string(),
                tags: tags(db.tag_list()),
            }));
            match out.marker() {
                Some(next) if !next.is_empty() => marker = Some(next.to_string()),
                _ => break,
            }
        }
        loop {
            let out = rds.describe_db_clusters().set_marker(marker.take()).max_records(100).send().await;
            let out = out.map_err(|e| classify("DescribeDBClusters", e))?;
            listed.extend(out.db_clusters().iter().map(|cluster| Listed {
                arn: cluster.db_cluster_arn().unwrap_or_default().to_string(),
                engine: cluster.engine().unwrap_or_default().to_string(),
                tags: tags(cluster.tag_list()),
            }));
            match out.marker() {
                Some(next) if !next.is_empty() => marker = Some(next.to_string()),
                _ => return Ok(listed),
            }
        }
    }

    async fn describe(&self, arn: &InstanceArn, access: &Access) -> Result<Option<Instance>, InventoryError> {
        if arn.account != access.account {
            return Err(InventoryError::AccessDenied(format!("{arn} is not in account {}", access.account)));
        }
        match arn.kind {
            ArnKind::Db => self.describe_instance(arn, access).await,
            ArnKind::Cluster => self.describe_cluster(arn, access).await,
        }
    }

    async fn master_credentials(&self, instance: &Instance) -> Result<MasterCredentials, InventoryError> {
        let secrets = self.clients(&instance.access).await?.secrets;
        if let Some(arn) = &instance.master_secret_arn {
            let master = read_master(&secrets, arn, None).await?;
            return Ok(MasterCredentials { user: master.username, password: master.password.into(), pending: None });
        }
        // A master password dbroles set earlier (allow_master_password_reset): the
        // one in force, and one a reset staged and set but did not promote.
        let own = self.master_secret_name(instance);
        let Some(versions) = own_versions(&secrets, &own).await? else {
            return Err(InventoryError::NoMasterSecret(instance.identifier.clone()));
        };
        let Some(current) = &versions.current else { return Err(InventoryError::NoMasterSecret(instance.identifier.clone())) };
        let master = read_master(&secrets, &own, Some(current)).await?;
        if master.password.is_empty() {
            // A reset staged a password the instance never got: there is none to use.
            return Err(InventoryError::NoMasterSecret(instance.identifier.clone()));
        }
        let pending = match &versions.pending {
            Some(version) => Some(read_master(&secrets, &own, Some(version)).await?.password.into()),
            None => None,
        };
        Ok(MasterCredentials { user: master.username, password: master.password.into(), pending })
    }

    async fn caller_arn(&self, access: &Access) -> Result<String, InventoryError> {
        let identity =
            self.clients(access).await?.sts.get_caller_identity().send().await.map_err(|e| classify("GetCallerIdentity", e))?;
        Ok(identity.arn().unwrap_or_default().to_string())
    }

    async fn reset_master_password(&self, instance: &Instance) -> Result<(), InventoryError> {
        let clients = self.clients(&instance.access).await?;
        let password = crate::engine::password::generate();
        let value = serde_json::json!({"username": instance.master_user, "password": password.expose_secret()}).to_string();
        let name = self.master_secret_name(instance);
        // Stored first: if the modification fails, the old password still works and nothing is lost.
        // Staged, not in force: if the modification fails, the stored password stays the one that works.
        let storing = format!("staging the new master password in {name}");
        if own_versions(&clients.secrets, &name).await?.is_none() {
            // The first version is AWSCURRENT whatever it is staged as: it says "none in force yet".
            let none = serde_json::json!({"username": instance.master_user, "password": ""}).to_string();
            clients
                .secrets
                .create_secret()
                .name(&name)
                .description(format!("The master password dbroles set on {}", instance.arn))
                .secret_string(none)
                .send()
                .await
                .map_err(|e| classify(&storing, e))?;
        }
        clients
            .secrets
            .put_secret_value()
            .secret_id(&name)
            .secret_string(&value)
            .version_stages("AWSPENDING")
            .send()
            .await
            .map_err(|e| classify(&storing, e))?;
        match instance.kind {
            ArnKind::Db => clients
                .rds
                .modify_db_instance()
                .db_instance_identifier(&instance.identifier)
                .master_user_password(password.expose_secret())
                .apply_immediately(true)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify("ModifyDBInstance", e)),
            ArnKind::Cluster => clients
                .rds
                .modify_db_cluster()
                .db_cluster_identifier(&instance.identifier)
                .master_user_password(password.expose_secret())
                .apply_immediately(true)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify("ModifyDBCluster", e)),
        }
    }

    async fn promote_master_password(&self, instance: &Instance) -> Result<bool, InventoryError> {
        if instance.master_secret_arn.is_some() {
            return Ok(false);
        }
        let secrets = self.clients(&instance.access).await?.secrets;
        let name = self.master_secret_name(instance);
        let Some(MasterVersions { current, pending: Some(pending) }) = own_versions(&secrets, &name).await? else {
            return Ok(false);
        };
        secrets
            .update_secret_version_stage()
            .secret_id(&name)
            .version_stage("AWSCURRENT")
            .move_to_version_id(pending)
            .set_remove_from_version_id(current)
            .send()
            .await
            .map_err(|e| classify(&format!("promoting the new master password in {name}"), e))?;
        Ok(true)
    }
}

/// The versions of a master secret dbroles keeps: the one in force, and one staged after it.
struct MasterVersions {
    current: Option<String>,
    pending: Option<String>,
}

/// `None` only if Secrets Manager says definitely that there is no such secret.
async fn own_versions(secrets: &aws_sdk_secretsmanager::Client, name: &str) -> Result<Option<MasterVersions>, InventoryError> {
    let described = match secrets.describe_secret().secret_id(name).send().await {
        Ok(described) => described,
        Err(e) if crate::aws::fault(&e) == Fault::NotFound => return Ok(None),
        Err(e) => return Err(classify(&format!("looking for the master secret {name}"), e)),
    };
    let versions = described.version_ids_to_stages().cloned().unwrap_or_default();
    let has = |stages: &Vec<String>, stage: &str| stages.iter().any(|s| s == stage);
    let current = versions.iter().find(|(_, stages)| has(stages, "AWSCURRENT")).map(|(id, _)| id.clone());
    let pending =
        versions.iter().find(|(_, stages)| has(stages, "AWSPENDING") && !has(stages, "AWSCURRENT")).map(|(id, _)| id.clone());
    Ok(Some(MasterVersions { current, pending }))
}

#[derive(serde::Deserialize)]
struct Master {
    username: String,
    password: String,
}

/// A master secret's `{username, password}`: the version given, or the current one.
async fn read_master(
    secrets: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
    version: Option<&str>,
) -> Result<Master, InventoryError> {
    let out = secrets
        .get_secret_value()
        .secret_id(secret_id)
        .set_version_id(version.map(str::to_string))
        .send()
        .await
        .map_err(|e| classify(&format!("reading the master secret {secret_id}"), e))?;
    serde_json::from_str(out.secret_string().unwrap_or_default())
        .map_err(|_| InventoryError::Failed(format!("the master secret {secret_id} is not JSON with username and password")))
}
