//! The AWS accounts an organisation may act on. Every job, connection and tag
//! trigger acts on an instance in one account, and only for an organisation that
//! may use that account:
//!
//! - the deployment's own account, for the organisations the deployment names
//!   ([`AccountPolicy::home_orgs`], the template's `HomeAccountOrgs`);
//! - an account the organisation registered (`PUT /dbroles/accounts/{id}`) with a
//!   role there that trusts dbroles under the organisation's [`external_id`].
//!   Registration proves it by assuming the role; every later `AssumeRole` for the
//!   organisation passes the same `ExternalId`, so another organisation that names
//!   the same role is refused by the role's own trust policy.
//!
//! Within an account, a database server belongs to exactly one organisation:
//! the first that was allowed to act on it ([`claim`]), recorded by dbroles
//! against the server's immutable resource id. A tag never transfers it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::deps::Deps;
use crate::inventory::{Instance, InventoryError};
use crate::job::Timestamp;
use crate::request::Invalid;
use crate::store::{AccountStore, StoreError};

/// The tag that names an instance's organisation. In the deployment's own
/// account an organisation's first job on a server needs it ([`claim`]), and
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

/// Why an organisation may not act on an account, or a registration failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AccountError {
    #[error(
        "organisation {org} may not act on AWS account {account}: an admin registers it with PUT /dbroles/accounts/{account}"
    )]
    NotRegistered { org: String, account: String },
    #[error("AWS account {account} is this deployment's own: only the organisations the deployment names may use it")]
    HomeAccount { account: String },
    #[error("account {0} is not registered")]
    NotFound(String),
    /// A role dbroles may not use for the account: in another account, or not a name the deployment may assume.
    #[error("{0}")]
    RoleRefused(String),
    #[error(
        "account {account} was not registered: dbroles could not assume {role_arn} with ExternalId {external_id}: {reason}. The role's trust policy must allow sts:AssumeRole to this deployment on the condition sts:ExternalId = {external_id}"
    )]
    Unproven { account: String, role_arn: String, external_id: String, reason: String },
    /// The server belongs to another organisation (which is not named).
    #[error("the database server {server} belongs to another organisation")]
    OwnedByAnother { server: String },
    /// A first claim in the deployment's own account needs the instance tagged for the organisation.
    #[error(
        "{server} is in this deployment's own account and belongs to no organisation yet: it becomes organisation {org}'s only if it is tagged {ORG_TAG}={org}"
    )]
    Untagged { server: String, org: String },
    /// The role lets in a caller with any ExternalId: whoever learns its ARN could use it.
    #[error(
        "account {account} was not registered: {role_arn} can be assumed with any ExternalId, so any organisation that learns its ARN could use it. Add to its trust policy the condition {{\"StringEquals\": {{\"sts:ExternalId\": \"{external_id}\"}}}}"
    )]
    Untrusting { account: String, role_arn: String, external_id: String },
    /// The account is registered by another organisation, and the deployment shares no account.
    #[error("account {account} is registered by another organisation")]
    AccountTaken { account: String },
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How `org` reaches `account`, or `NotRegistered` (the API's 403).
pub async fn access(deps: &Deps, org: &str, account: &str) -> Result<Access, AccountError> {
    if account == deps.inventory.home_account().await? {
        return match deps.settings.accounts.allows_home(org) {
            true => Ok(Access::home(account, org)),
            false => Err(AccountError::NotRegistered { org: org.into(), account: account.into() }),
        };
    }
    match deps.accounts.get_account(org, account).await? {
        Some(registered) => {
            Ok(Access { account: account.into(), role_arn: Some(registered.role_arn), external_id: external_id(org) })
        }
        None => Err(AccountError::NotRegistered { org: org.into(), account: account.into() }),
    }
}

/// Every organisation that may act on `account`, with its access: the organisations
/// the deployment names for its own account, or those that registered it.
pub async fn organisations(deps: &Deps, account: &str) -> Result<Vec<(String, Access)>, AccountError> {
    if account == deps.inventory.home_account().await? {
        let orgs = &deps.settings.accounts.home_orgs;
        return Ok(orgs.iter().map(|org| (org.clone(), Access::home(account, org))).collect());
    }
    let registered = deps.accounts.registrations(account).await?;
    Ok(registered
        .into_iter()
        .map(|a| {
            let access = Access { account: a.account_id, role_arn: Some(a.role_arn), external_id: a.external_id };
            (a.org_id, access)
        })
        .collect())
}

/// Checks that `org` may act on the database server `instance` is (or belongs
/// to), claiming it if no organisation has: the server then belongs to `org`
/// for good. In the deployment's own account, which several organisations may
/// use, a first claim needs the instance tagged `dbroles:org=<org>`; in an
/// account the organisation registered, its role decides. Afterwards a tag
/// changes nothing: one naming another organisation is logged and ignored.
pub async fn claim(store: &dyn AccountStore, org: &str, instance: &Instance) -> Result<ServerOwner, AccountError> {
    let server = instance.server_arn().to_string();
    let tagged = instance.tags.iter().find(|tag| tag.key == ORG_TAG).map(|tag| tag.value.as_str());
    if instance.resource_id.is_empty() {
        return Err(InventoryError::Failed(format!("{server} has no resource id")).into());
    }
    let owner = match store.server_owner(&instance.resource_id).await? {
        Some(owner) => owner,
        None => {
            let home = instance.access.role_arn.is_none();
            if home && tagged != Some(org) {
                return Err(AccountError::Untagged { server, org: org.into() });
            }
            let claim = ServerOwner {
                resource_id: instance.resource_id.clone(),
                org_id: org.into(),
                server_arn: server.clone(),
                claimed_at: Timestamp::now(),
            };
            store.claim_server(&claim).await?
        }
    };
    if owner.org_id != org {
        tracing::warn!(org, server = server.as_str(), "refused: the database server belongs to another organisation");
        return Err(AccountError::OwnedByAnother { server });
    }
    if let Some(named) = tagged.filter(|named| *named != org) {
        let message = "the server's dbroles:org tag names another organisation: ignored, the server stays its owner's";
        tracing::warn!(org, server = server.as_str(), tag = named, "{message}");
    }
    Ok(owner)
}

/// Registers (or re-registers) `account_id` for `org`, once dbroles has assumed
/// the role with the organisation's `ExternalId`. Nothing is stored otherwise.
pub async fn register(
    deps: &Deps,
    org: &str,
    by: &str,
    account_id: &str,
    body: RegisterAccount,
) -> Result<Account, AccountError> {
    validate_account_id(account_id)?;
    validate_role(&body.role_arn, account_id, deps.settings.accounts.role_name.as_deref())
        .map_err(|refused| AccountError::RoleRefused(refused.0))?;
    if account_id == deps.inventory.home_account().await? {
        return Err(AccountError::HomeAccount { account: account_id.into() });
    }
    if !deps.settings.accounts.shared_accounts {
        let registrations = deps.accounts.registrations(account_id).await?;
        if registrations.iter().any(|registered| registered.org_id != org) {
            return Err(AccountError::AccountTaken { account: account_id.into() });
        }
    }
    let external_id = external_id(org);
    let access = Access { account: account_id.into(), role_arn: Some(body.role_arn.clone()), external_id: external_id.clone() };
    let assumed_arn = deps.inventory.verify(&access).await.map_err(|error| AccountError::Unproven {
        account: account_id.into(),
        role_arn: body.role_arn.clone(),
        external_id: external_id.clone(),
        reason: error.to_string(),
    })?;
    // The role must require the ExternalId: one that lets in any caller who knows its ARN is refused.
    let probe = Access { external_id: format!("{}-probe-{}", external_id, uuid::Uuid::new_v4().simple()), ..access.clone() };
    match deps.inventory.verify(&probe).await {
        // A passing failure proves nothing either way (an assume refused surfaces through the credentials provider).
        Err(InventoryError::Unavailable(reason)) if !reason.contains("AccessDenied") => {
            return Err(InventoryError::Unavailable(reason).into())
        }
        Err(_) => {}
        Ok(_) => {
            return Err(AccountError::Untrusting {
                account: account_id.into(),
                role_arn: body.role_arn.clone(),
                external_id: external_id.clone(),
            })
        }
    }
    let account = Account {
        account_id: account_id.into(),
        org_id: org.into(),
        role_arn: body.role_arn,
        external_id,
        assumed_arn,
        registered_at: Timestamp::now(),
        registered_by: by.into(),
    };
    deps.accounts.put_account(&account).await?;
    Ok(account)
}

pub async fn find(deps: &Deps, org: &str, account_id: &str) -> Result<Account, AccountError> {
    validate_account_id(account_id)?;
    deps.accounts.get_account(org, account_id).await?.ok_or_else(|| AccountError::NotFound(account_id.into()))
}

pub async fn list(deps: &Deps, org: &str) -> Result<Vec<Account>, AccountError> {
    Ok(deps.accounts.list_accounts(org).await?)
}

/// Forgets a registration: later jobs of the organisation on the account get 403.
pub async fn remove(deps: &Deps, org: &str, account_id: &str) -> Result<(), AccountError> {
    validate_account_id(account_id)?;
    deps.accounts.delete_account(org, account_id).await.map_err(|error| match error {
        StoreError::NotFound => AccountError::NotFound(account_id.into()),
        other => other.into(),
    })
}

pub fn validate_account_id(account_id: &str) -> Result<(), Invalid> {
    match account_id.len() == 12 && account_id.bytes().all(|b| b.is_ascii_digit()) {
        true => Ok(()),
        false => Err(Invalid(format!("account_id: '{account_id}' is not a 12-digit AWS account id"))),
    }
}

/// `arn:<partition>:iam::<account_id>:role/[path/]<name>`, the name as the deployment allows
/// (the schema checks the shape; a role elsewhere or of another name is refused).
fn validate_role(role_arn: &str, account_id: &str, allowed: Option<&str>) -> Result<(), Invalid> {
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

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(text) = text.strip_prefix(head) else { return false };
            (0..=text.len()).filter(|&i| text.is_char_boundary(i)).any(|i| glob(rest, &text[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(validate_account_id("12345678901").is_err());
        assert!(validate_account_id("12345678901a").is_err());
    }
}
