//! The `Network` port: lets a CIDR reach an instance's port. Adapter: [`ec2`],
//! one security group per instance in the instance's VPC.

pub mod ec2;

use async_trait::async_trait;

use crate::inventory::Instance;

/// The tag on every security group dbroles creates (`true`).
pub const MANAGED_TAG: &str = "dbroles:managed";

#[async_trait]
pub trait Network: Send + Sync {
    /// Opens the instance's port to `cidr`; returns the security group's id.
    async fn open(&self, instance: &Instance, cidr: &str) -> Result<String, NetworkError>;
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NetworkError {
    #[error("aws.default_security_group.ingress_cidr: '{0}' is not a CIDR")]
    InvalidCidr(String),
    #[error("{0} is not in a VPC: no security group can be attached")]
    NoVpc(String),
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// Worth another attempt: throttling, a 5xx, a time-out.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Failed(String),
}
