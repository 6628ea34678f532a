//! The EC2 adapter of [`Network`]: one security group per instance,
//! `dbroles-<instance id>`, tagged as dbroles' own, attached beside the instance's
//! groups. It admits the requested CIDR and the provision function's own security
//! groups on the database port, so the function that connects is let in too.

use async_trait::async_trait;
use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{Filter, IpPermission, IpRange, Ipv6Range, ResourceType, Tag, TagSpecification, UserIdGroupPair};

use super::{Network, NetworkError, MANAGED_TAG};
use crate::inventory::Instance;
use crate::model::request::ArnKind;

fn aws_error<E: ProvideErrorMetadata + std::error::Error + 'static>(
    action: &str,
    error: SdkError<E, HttpResponse>,
) -> NetworkError {
    crate::aws::classify(action, error, [NetworkError::AccessDenied, NetworkError::Unavailable, NetworkError::Failed])
}

/// Works in the account of the instance it is given: the deployment's own, or
/// another through the role its organisation registered (the instance's `access`).
pub struct Ec2Network {
    pub home: aws_config::SdkConfig,
    /// The provision function's security groups (`DBROLES_PROVISION_SECURITY_GROUPS`), admitted too.
    pub admit: Vec<String>,
}

/// The EC2 and RDS clients of one account.
struct Clients {
    ec2: aws_sdk_ec2::Client,
    rds: aws_sdk_rds::Client,
}

/// Who a rule lets in.
enum Source<'a> {
    Cidr(&'a ipnet::IpNet),
    Group(&'a str),
}

impl Ec2Network {
    /// The clients of the instance's account, acting as the job's organisation may there.
    async fn clients(&self, instance: &Instance) -> Clients {
        let config = match &instance.access.role_arn {
            None => self.home.clone(),
            Some(role_arn) => crate::inventory::rds::assumed(&self.home, role_arn, &instance.access.external_id).await,
        };
        Clients { ec2: aws_sdk_ec2::Client::new(&config), rds: aws_sdk_rds::Client::new(&config) }
    }
}

impl Clients {
    async fn group(&self, name: &str, vpc: &str, instance: &Instance) -> Result<String, NetworkError> {
        let found = self
            .ec2
            .describe_security_groups()
            .filters(Filter::builder().name("group-name").values(name).build())
            .filters(Filter::builder().name("vpc-id").values(vpc).build())
            .filters(Filter::builder().name(format!("tag:{MANAGED_TAG}")).values("true").build())
            .send()
            .await
            .map_err(|e| aws_error("DescribeSecurityGroups", e))?;
        if let Some(id) = found.security_groups().first().and_then(|g| g.group_id()) {
            return Ok(id.to_string());
        }
        let created = self
            .ec2
            .create_security_group()
            .group_name(name)
            .vpc_id(vpc)
            .description(format!("dbroles: access to {}", instance.identifier))
            // The deployment's IAM policy lets dbroles change only the groups it tagged.
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::SecurityGroup)
                    .tags(Tag::builder().key(MANAGED_TAG).value("true").build())
                    .tags(Tag::builder().key("Name").value(name).build())
                    .build(),
            )
            .send()
            .await
            .map_err(|e| aws_error("CreateSecurityGroup", e))?;
        created.group_id().map(str::to_string).ok_or_else(|| NetworkError::Failed("CreateSecurityGroup returned no id".into()))
    }

    async fn authorize(&self, group: &str, port: u16, source: Source<'_>) -> Result<(), NetworkError> {
        let permission = IpPermission::builder().ip_protocol("tcp").from_port(port.into()).to_port(port.into());
        let description = "dbroles: database access";
        let permission = match source {
            Source::Cidr(ipnet::IpNet::V4(v4)) => {
                permission.ip_ranges(IpRange::builder().cidr_ip(v4.to_string()).description(description).build())
            }
            Source::Cidr(ipnet::IpNet::V6(v6)) => {
                permission.ipv6_ranges(Ipv6Range::builder().cidr_ipv6(v6.to_string()).description(description).build())
            }
            Source::Group(id) => permission.user_id_group_pairs(
                UserIdGroupPair::builder().group_id(id).description("dbroles: the provision function").build(),
            ),
        };
        match self.ec2.authorize_security_group_ingress().group_id(group).ip_permissions(permission.build()).send().await {
            Ok(_) => Ok(()),
            // The rule is there already: success.
            Err(e) if e.as_service_error().and_then(|e| e.code()) == Some("InvalidPermission.Duplicate") => Ok(()),
            Err(e) => Err(aws_error("AuthorizeSecurityGroupIngress", e)),
        }
    }

    async fn attach(&self, instance: &Instance, group: &str) -> Result<(), NetworkError> {
        if instance.security_groups.iter().any(|g| g == group) {
            return Ok(());
        }
        let mut groups = instance.security_groups.clone();
        groups.push(group.to_string());
        match instance.kind {
            ArnKind::Db => self
                .rds
                .modify_db_instance()
                .db_instance_identifier(&instance.identifier)
                .set_vpc_security_group_ids(Some(groups))
                .apply_immediately(true)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| aws_error("ModifyDBInstance", e)),
            ArnKind::Cluster => self
                .rds
                .modify_db_cluster()
                .db_cluster_identifier(&instance.identifier)
                .set_vpc_security_group_ids(Some(groups))
                .apply_immediately(true)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| aws_error("ModifyDBCluster", e)),
        }
    }
}

#[async_trait]
impl Network for Ec2Network {
    async fn open(&self, instance: &Instance, cidr: &str) -> Result<String, NetworkError> {
        let cidr: ipnet::IpNet = cidr.parse().map_err(|_| NetworkError::InvalidCidr(cidr.to_string()))?;
        let vpc = instance.vpc_id.as_deref().ok_or_else(|| NetworkError::NoVpc(instance.identifier.clone()))?;
        let clients = self.clients(instance).await;
        let group = clients.group(&format!("dbroles-{}", instance.identifier), vpc, instance).await?;
        // The port the group guards is the instance's own, whatever a test or tunnel connects to.
        clients.authorize(&group, instance.endpoint_port, Source::Cidr(&cidr)).await?;
        for admitted in &self.admit {
            clients.authorize(&group, instance.endpoint_port, Source::Group(admitted)).await?;
        }
        clients.attach(instance, &group).await?;
        Ok(group)
    }
}
