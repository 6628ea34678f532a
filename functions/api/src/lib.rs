//! The API Lambda: API Gateway's HTTP API events through the axum router of
//! [`dbroles_core::api`]. API Gateway's JWT authorizer has checked the token;
//! the claims arrive in the request context, which `lambda_http` puts in the
//! request's extensions.

use std::sync::Arc;

use dbroles_core::api;
use dbroles_core::auth::{authorization, caller_from_claims, AuthError, Caller};
use dbroles_core::config::{Config, ConfigError};
use dbroles_core::deps::App;
use lambda_http::request::RequestContext;

/// The caller named by the authorizer's claims; the groups read exactly from the
/// token the authorizer verified (the `Authorization` header).
pub fn caller(parts: &http::request::Parts, org_claim: &str, groups_claim: &str) -> Result<Caller, AuthError> {
    let claims = match parts.extensions.get::<RequestContext>() {
        Some(RequestContext::ApiGatewayV2(context)) => {
            context.authorizer.as_ref().and_then(|a| a.jwt.as_ref()).map(|jwt| &jwt.claims)
        }
        _ => None,
    };
    let bearer = authorization(&parts.headers)?;
    caller_from_claims(claims.ok_or(AuthError::Missing)?, org_claim, groups_claim, bearer)
}

/// The API's router, each request's caller read from its claims.
pub fn router(app: Arc<App>, org_claim: &str) -> axum::Router {
    let org_claim: Arc<str> = org_claim.into();
    let groups_claim: Arc<str> = app.deps.settings.groups.claim.as_str().into();
    api::authenticated(api::router(app), move |parts| caller(parts, &org_claim, &groups_claim))
}

/// The router's dependencies on the AWS clients of `aws`: the table, RDS and the state machine.
pub async fn app_on(config: &Config, aws: &aws_config::SdkConfig) -> Result<App, ConfigError> {
    let deps = dbroles_core::wiring::aws(config, aws).await?;
    dbroles_core::wiring::aws_app(config, &deps, aws)
}
