//! The `Network` port: lets a CIDR reach an instance's port. Its EC2 adapter keeps
//! one security group per instance, `dbroles-<instance id>`, in the instance's VPC.

use async_trait::async_trait;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_ec2::types::{Filter, IpPermission, IpRange, Ipv6Range, ResourceType, Tag, TagSpecification};

use super::{ErrorType, StepError};
use crate::inventory::Instance;
use crate::request::ArnKind;

/// The tag on every security group dbroles creates (`true`).
pub const MANAGED_TAG: &str = "dbroles:managed";

#[async_trait]
pub trait Network: Send + Sync {
    /// Opens the instance's port to `cidr`; returns the security group's id.
    async fn open(&self, instance: &Instance, cidr: &str) -> Result<String, StepError>;
}

pub struct Ec2Network {
    pub ec2: aws_sdk_ec2::Client,
    pub rds: aws_sdk_rds::Client,
}

fn aws_error<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    action: &str,
    error: aws_sdk_ec2::error::SdkError<E, R>,
) -> StepError {
    let code = error.as_service_error().and_then(|e| e.code()).unwrap_or_default().to_string();
    let error_type = if code.contains("UnauthorizedOperation") || code.contains("AccessDenied") {
        ErrorType::AccessDenied
    } else {
        ErrorType::Retryable
    };
    StepError::new(error_type, format!("{action}: {}", DisplayErrorContext(&error)))
}

impl Ec2Network {
    async fn group(&self, name: &str, vpc: &str, instance: &Instance) -> Result<String, StepError> {
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
        created
            .group_id()
            .map(str::to_string)
            .ok_or_else(|| StepError::new(ErrorType::Retryable, "CreateSecurityGroup returned no id"))
    }

    async fn authorize(&self, group: &str, port: u16, cidr: &ipnet::IpNet) -> Result<(), StepError> {
        let permission = IpPermission::builder().ip_protocol("tcp").from_port(port.into()).to_port(port.into());
        let description = "dbroles: database access";
        let permission = match cidr {
            ipnet::IpNet::V4(v4) => {
                permission.ip_ranges(IpRange::builder().cidr_ip(v4.to_string()).description(description).build())
            }
            ipnet::IpNet::V6(v6) => {
                permission.ipv6_ranges(Ipv6Range::builder().cidr_ipv6(v6.to_string()).description(description).build())
            }
        };
        match self.ec2.authorize_security_group_ingress().group_id(group).ip_permissions(permission.build()).send().await {
            Ok(_) => Ok(()),
            // The rule is there already: success.
            Err(e) if e.as_service_error().and_then(|e| e.code()) == Some("InvalidPermission.Duplicate") => Ok(()),
            Err(e) => Err(aws_error("AuthorizeSecurityGroupIngress", e)),
        }
    }

    async fn attach(&self, instance: &Instance, group: &str) -> Result<(), StepError> {
        if instance.security_groups.iter().any(|g| g == group) {
            return Ok(());
        }
        let mut groups = instance.security_groups.clone();
        groups.push(group.to_string());
        let rds_error = |action: &str, text: String| StepError::new(ErrorType::Retryable, format!("{action}: {text}"));
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
                .map_err(|e| rds_error("ModifyDBInstance", aws_sdk_rds::error::DisplayErrorContext(e).to_string())),
            ArnKind::Cluster => self
                .rds
                .modify_db_cluster()
                .db_cluster_identifier(&instance.identifier)
                .set_vpc_security_group_ids(Some(groups))
                .apply_immediately(true)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| rds_error("ModifyDBCluster", aws_sdk_rds::error::DisplayErrorContext(e).to_string())),
        }
    }
}

#[async_trait]
impl Network for Ec2Network {
    async fn open(&self, instance: &Instance, cidr: &str) -> Result<String, StepError> {
        let cidr: ipnet::IpNet = cidr.parse().map_err(|_| {
            StepError::new(ErrorType::InvalidInput, format!("aws.default_security_group.ingress_cidr: '{cidr}' is not a CIDR"))
        })?;
        let vpc = instance.vpc_id.as_deref().ok_or_else(|| {
            StepError::new(
                ErrorType::NotSupported,
                format!("{} is not in a VPC: no security group can be attached", instance.identifier),
            )
        })?;
        let group = self.group(&format!("dbroles-{}", instance.identifier), vpc, instance).await?;
        self.authorize(&group, instance.port, &cidr).await?;
        self.attach(instance, &group).await?;
        Ok(group)
    }
}
