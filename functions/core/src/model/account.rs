//! The account types: which organisation reaches which AWS account, how, and
//! which database server belongs to whom. The checks that use them live in
//! [`crate::lifecycle::accounts`].

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::request::Invalid;
use super::Timestamp;
use dbroles_engine::glob;

/// The tag that names an instance's organisation. In the deployment's own
/// account an organisation's first job on a server needs it ([`crate::lifecycle::accounts::claim`]), and
/// dbroles changes (security groups, master password) only instances that carry
/// it with the job's organisation; the IAM policy allows those changes only then.
pub const ORG_TAG: &str = "dbroles:org";

/// The organisation a database server belongs to, in dbroles' own records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerOwner {
    /// The server's immutable id: the instance's `DbiResourceId`, or its Aurora
    /// cluster's `DbClusterResourceId`. A server deleted and created again under
    /// the same name has a new one, and no owner.
    pub resource_id: String,
    pub org_id: String,
    /// The server's ARN when it was claimed.
    pub server_arn: String,
    pub claimed_at: Timestamp,
}

/// An account an organisation registered (an item of `/dbroles/accounts`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Account {
    /// The 12-digit AWS account id.
    pub account_id: String,
    pub org_id: String,
    /// The role dbroles assumes in the account.
    pub role_arn: String,
    /// What the role's trust policy must require (`sts:ExternalId`): the organisation's, the same for every account.
    pub external_id: String,
    /// The identity dbroles became when it proved the registration.
    pub assumed_arn: String,
    #[schema(value_type = String, format = DateTime)]
    pub registered_at: Timestamp,
    /// The `sub` of the admin who registered it.
    pub registered_by: String,
}

/// The body of `PUT /dbroles/accounts/{account_id}`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
pub struct RegisterAccount {
    /// `arn:aws:iam::<account_id>:role/<name>`: a role whose trust policy lets this
    /// deployment assume it with the organisation's `ExternalId`.
    #[schema(pattern = "^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+$")]
    pub role_arn: String,
}

/// How dbroles reaches one account for one organisation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    pub account: String,
    /// The role to assume; `None` for the deployment's own account, reached with its own credentials.
    pub role_arn: Option<String>,
    pub external_id: String,
}

impl Access {
    /// The deployment's own account, as an organisation allowed there reaches it.
    pub fn home(account: &str, org: &str) -> Self {
        Self { account: account.to_string(), role_arn: None, external_id: external_id(org) }
    }
}

/// Which organisations may use the deployment's own account, and which roles may be registered elsewhere.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountPolicy {
    /// The organisations that may act on the deployment's own account.
    pub home_orgs: Vec<String>,
    /// The name registered roles must have (`*` matches any run of characters):
    /// the roles the functions' IAM policies allow them to assume. `None`: any.
    pub role_name: Option<String>,
    /// Whether several organisations may register one account (each server
    /// then belongs to the first that acts on it). Off: an account registered
    /// by one organisation is refused to the others.
    pub shared_accounts: bool,
}

impl AccountPolicy {
    pub fn allows_home(&self, org: &str) -> bool {
        self.home_orgs.iter().any(|allowed| allowed == org)
    }
}

/// The `ExternalId` of an organisation: `dbroles-` and 32 hex digits of
/// SHA-256(`dbroles/external-id/<org>`). Stable, and the same in every account.
pub fn external_id(org: &str) -> String {
    let digest = Sha256::digest(format!("dbroles/external-id/{org}").as_bytes());
    format!("dbroles-{}", &hex::encode(digest)[..32])
}

/// `arn:<partition>:iam::<account_id>:role/[path/]<name>`, the name as the deployment allows
/// (the schema checks the shape; a role elsewhere or of another name is refused).
pub fn validate_role(role_arn: &str, account_id: &str, allowed: Option<&str>) -> Result<(), Invalid> {
    let shape =
        || Invalid(format!("role_arn: '{role_arn}' is not an IAM role ARN such as arn:aws:iam::{account_id}:role/dbroles"));
    let parts: Vec<&str> = role_arn.splitn(6, ':').collect();
    let [arn, partition, "iam", "", account, resource] = parts.as_slice() else { return Err(shape()) };
    let Some(path) = resource.strip_prefix("role/") else { return Err(shape()) };
    if *arn != "arn" || partition.is_empty() || path.is_empty() || path.ends_with('/') {
        return Err(shape());
    }
    if *account != account_id {
        return Err(Invalid(format!("role_arn: the role is in account {account}, not {account_id}")));
    }
    let name = path.rsplit('/').next().unwrap_or(path);
    match allowed {
        Some(pattern) if !glob(pattern, name) => {
            Err(Invalid(format!("role_arn: this deployment may assume only roles named {pattern}, not {name}")))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AccountId;

    #[test]
    fn the_external_id_is_the_organisations_and_stable() {
        assert_eq!(external_id("acme"), external_id("acme"));
        assert_ne!(external_id("acme"), external_id("acme2"));
        let id = external_id("acme");
        assert!(id.starts_with("dbroles-") && id.len() == 40, "{id}");
    }

    #[test]
    fn roles_are_checked_against_the_account_and_the_allowed_names() {
        let account = "111111111111";
        assert!(validate_role("arn:aws:iam::111111111111:role/dbroles", account, Some("dbroles")).is_ok());
        assert!(validate_role("arn:aws:iam::111111111111:role/ops/dbroles-prod", account, Some("dbroles*")).is_ok());
        let other = validate_role("arn:aws:iam::222222222222:role/dbroles", account, None).unwrap_err();
        assert_eq!(other.0, "role_arn: the role is in account 222222222222, not 111111111111");
        let name = validate_role("arn:aws:iam::111111111111:role/admin", account, Some("dbroles*")).unwrap_err();
        assert!(name.0.contains("only roles named dbroles*"), "{}", name.0);
        for bad in
            ["arn:aws:iam::111111111111:user/x", "arn:aws:sts::111111111111:role/x", "role/x", "arn:aws:iam::111111111111:role/"]
        {
            assert!(validate_role(bad, account, None).is_err(), "{bad}");
        }
        assert!("12345678901".parse::<AccountId>().is_err());
        assert!("12345678901a".parse::<AccountId>().is_err());
    }
}
