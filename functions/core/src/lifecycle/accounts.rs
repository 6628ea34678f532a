//! The AWS accounts an organisation may act on. Every job, connection and tag
//! trigger acts on an instance in one account, and only for an organisation that
//! may use that account:
//!
//! - the deployment's own account, for the organisations the deployment names
//!   ([`crate::model::account::AccountPolicy::home_orgs`], the template's `HomeAccountOrgs`);
//! - an account the organisation registered (`PUT /dbroles/accounts/{id}`) with a
//!   role there that trusts dbroles under the organisation's [`crate::model::account::external_id`].
//!   Registration proves it by assuming the role; every later `AssumeRole` for the
//!   organisation passes the same `ExternalId`, so another organisation that names
//!   the same role is refused by the role's own trust policy.
//!
//! Within an account, a database server belongs to exactly one organisation:
//! the first that was allowed to act on it ([`claim`]), recorded by dbroles
//! against the server's immutable resource id. A tag never transfers it.

use crate::deps::Deps;
use crate::inventory::{Instance, Inventory, InventoryError};
use crate::model::account::{external_id, validate_role, Access, Account, AccountPolicy, RegisterAccount, ServerOwner, ORG_TAG};
use crate::model::request::Invalid;
use crate::model::{AccountId, Timestamp};
use crate::store::{AccountStore, StoreError};

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

/// What the account checks read: the deployment's own account (the
/// inventory knows it), the registrations, and the deployment's policy.
#[derive(Clone, Copy)]
pub struct Tenancy<'a> {
    pub inventory: &'a dyn Inventory,
    pub accounts: &'a dyn AccountStore,
    pub policy: &'a AccountPolicy,
}

impl<'a> Tenancy<'a> {
    /// The ports and policy of `deps` the account checks read.
    pub fn of(deps: &'a Deps) -> Self {
        Self { inventory: deps.inventory.as_ref(), accounts: deps.accounts.as_ref(), policy: &deps.settings.accounts }
    }
}

/// How `org` reaches `account`, or `NotRegistered` (the API's 403).
pub async fn access(tenancy: Tenancy<'_>, org: &str, account: &str) -> Result<Access, AccountError> {
    if account == tenancy.inventory.home_account().await? {
        return match tenancy.policy.allows_home(org) {
            true => Ok(Access::home(account, org)),
            false => Err(AccountError::NotRegistered { org: org.into(), account: account.into() }),
        };
    }
    match tenancy.accounts.get_account(org, account).await? {
        Some(registered) => {
            Ok(Access { account: account.into(), role_arn: Some(registered.role_arn), external_id: external_id(org) })
        }
        None => Err(AccountError::NotRegistered { org: org.into(), account: account.into() }),
    }
}

/// Every organisation that may act on `account`, with its access: the organisations
/// the deployment names for its own account, or those that registered it.
pub async fn organisations(tenancy: Tenancy<'_>, account: &str) -> Result<Vec<(String, Access)>, AccountError> {
    if account == tenancy.inventory.home_account().await? {
        let orgs = &tenancy.policy.home_orgs;
        return Ok(orgs.iter().map(|org| (org.clone(), Access::home(account, org))).collect());
    }
    let registered = tenancy.accounts.registrations(account).await?;
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
    tenancy: Tenancy<'_>,
    org: &str,
    by: &str,
    account_id: &AccountId,
    body: RegisterAccount,
) -> Result<Account, AccountError> {
    let account_id = account_id.as_str();
    validate_role(&body.role_arn, account_id, tenancy.policy.role_name.as_deref())
        .map_err(|refused| AccountError::RoleRefused(refused.0))?;
    if account_id == tenancy.inventory.home_account().await? {
        return Err(AccountError::HomeAccount { account: account_id.into() });
    }
    if !tenancy.policy.shared_accounts {
        let registrations = tenancy.accounts.registrations(account_id).await?;
        if registrations.iter().any(|registered| registered.org_id != org) {
            return Err(AccountError::AccountTaken { account: account_id.into() });
        }
    }
    let external_id = external_id(org);
    let access = Access { account: account_id.into(), role_arn: Some(body.role_arn.clone()), external_id: external_id.clone() };
    let assumed_arn = tenancy.inventory.verify(&access).await.map_err(|error| AccountError::Unproven {
        account: account_id.into(),
        role_arn: body.role_arn.clone(),
        external_id: external_id.clone(),
        reason: error.to_string(),
    })?;
    // The role must require the ExternalId: one that lets in any caller who knows its ARN is refused.
    let probe = Access { external_id: format!("{}-probe-{}", external_id, uuid::Uuid::new_v4().simple()), ..access.clone() };
    match tenancy.inventory.verify(&probe).await {
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
    tenancy.accounts.put_account(&account).await?;
    Ok(account)
}

pub async fn find(store: &dyn AccountStore, org: &str, account_id: &AccountId) -> Result<Account, AccountError> {
    let id = account_id.as_str();
    store.get_account(org, id).await?.ok_or_else(|| AccountError::NotFound(id.into()))
}

pub async fn list(store: &dyn AccountStore, org: &str) -> Result<Vec<Account>, AccountError> {
    Ok(store.list_accounts(org).await?)
}

/// Forgets a registration: later jobs of the organisation on the account get 403.
pub async fn remove(store: &dyn AccountStore, org: &str, account_id: &AccountId) -> Result<(), AccountError> {
    store.delete_account(org, account_id.as_str()).await.map_err(|error| match error {
        StoreError::NotFound => AccountError::NotFound(account_id.to_string()),
        other => other.into(),
    })
}
