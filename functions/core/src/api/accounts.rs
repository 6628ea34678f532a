//! The account routes: the AWS accounts an organisation may act on ([`crate::lifecycle::accounts`]).

use axum::extract::{Path, State};
use axum::Json;
use http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::{Admin, Body, Reader};
use super::{ApiError, Message, Shared};
use crate::lifecycle::accounts::{self, Tenancy};
use crate::model::account::{Account, RegisterAccount};
use crate::model::request::{parse_json, Invalid};
use crate::model::AccountId;

type Answer<T> = Result<T, ApiError>;

/// The organisation's accounts, and the `ExternalId` their roles' trust policies must require.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountList {
    /// The organisation's `ExternalId`: put it in a role's trust policy before registering the role.
    pub external_id: String,
    pub items: Vec<Account>,
}

/// Registers an AWS account for the organisation, once dbroles has assumed the role
/// there with the organisation's `ExternalId`.
#[utoipa::path(
    put, path = "/dbroles/accounts/{account_id}", tag = "accounts",
    params(("account_id" = String, Path, pattern = "^[0-9]{12}$", description = "The 12-digit AWS account id")),
    request_body = RegisterAccount,
    responses(
        (status = 200, description = "The account is registered", body = Account),
        (status = 400, description = "The account id or role ARN is malformed", body = Message),
        (status = 403, description = "The caller is not an admin; the account is the deployment's own; the role is in another account or has a name the deployment may not assume; dbroles could not assume it with the organisation's ExternalId; or it can be assumed with any ExternalId", body = Message),
        (status = 409, description = "Another organisation registered the account (and the deployment shares no account)", body = Message),
    ),
    security(("bearer" = []))
)]
pub(super) async fn put(
    State(app): State<Shared>,
    Admin(caller): Admin,
    Path(account_id): Path<String>,
    Body(body): Body,
) -> Answer<Json<Account>> {
    let body: RegisterAccount = parse_json(&body)?;
    let account_id = parse_account_id(&account_id)?;
    Ok(Json(accounts::register(Tenancy::of(&app.deps), &caller.org, &caller.sub, &account_id, body).await?))
}

/// The organisation's registered accounts, and its `ExternalId`.
#[utoipa::path(
    get, path = "/dbroles/accounts", tag = "accounts",
    responses(
        (status = 200, description = "The accounts", body = AccountList),
        (status = 403, description = "The caller is in no group that may read", body = Message),
    ),
    security(("bearer" = []))
)]
pub(super) async fn list(State(app): State<Shared>, Reader(caller): Reader) -> Answer<Json<AccountList>> {
    let items = accounts::list(app.deps.accounts.as_ref(), &caller.org).await?;
    Ok(Json(AccountList { external_id: crate::model::account::external_id(&caller.org), items }))
}

/// One registered account.
#[utoipa::path(
    get, path = "/dbroles/accounts/{account_id}", tag = "accounts",
    params(("account_id" = String, Path, pattern = "^[0-9]{12}$", description = "The 12-digit AWS account id")),
    responses(
        (status = 200, description = "The account", body = Account),
        (status = 400, description = "The account id is invalid", body = Message),
        (status = 403, description = "The caller is in no group that may read", body = Message),
        (status = 404, description = "The organisation has not registered the account", body = Message),
    ),
    security(("bearer" = []))
)]
pub(super) async fn get(
    State(app): State<Shared>,
    Reader(caller): Reader,
    Path(account_id): Path<String>,
) -> Answer<Json<Account>> {
    Ok(Json(accounts::find(app.deps.accounts.as_ref(), &caller.org, &parse_account_id(&account_id)?).await?))
}

/// Forgets a registration: the organisation's later jobs on the account get 403.
#[utoipa::path(
    delete, path = "/dbroles/accounts/{account_id}", tag = "accounts",
    params(("account_id" = String, Path, pattern = "^[0-9]{12}$", description = "The 12-digit AWS account id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "The account id is invalid", body = Message),
        (status = 403, description = "The caller is not an admin", body = Message),
        (status = 404, description = "The organisation has not registered the account", body = Message),
    ),
    security(("bearer" = []))
)]
pub(super) async fn delete(
    State(app): State<Shared>,
    Admin(caller): Admin,
    Path(account_id): Path<String>,
) -> Answer<StatusCode> {
    accounts::remove(app.deps.accounts.as_ref(), &caller.org, &parse_account_id(&account_id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The path's account id, parsed once here.
fn parse_account_id(text: &str) -> Result<AccountId, Invalid> {
    text.parse().map_err(|e: Invalid| Invalid(format!("account_id: {}", e.0)))
}
