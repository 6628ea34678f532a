//! The API Lambda: an API Gateway HTTP API event in, the shared router's answer out.
//! API Gateway's JWT authorizer has checked the token; the claims arrive in the
//! request context.

use bytes::Bytes;
use dbroles_core::api::{self, App};
use dbroles_core::auth::{caller_from_claims, AuthError, Caller};
use dbroles_core::config::{self, Config};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};

/// The caller named by the authorizer's claims.
pub fn caller(event: &Request, org_claim: &str) -> Result<Caller, AuthError> {
    let claims = match event.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => {
            context.authorizer.as_ref().and_then(|a| a.jwt.as_ref()).map(|jwt| &jwt.claims)
        }
        _ => None,
    };
    caller_from_claims(claims.ok_or(AuthError::Missing)?, org_claim)
}

/// Answers one event.
pub async fn handle(app: &App, org_claim: &str, event: Request) -> Response<Body> {
    let caller = caller(&event, org_claim);
    let (parts, body) = event.into_parts();
    let request = http::Request::from_parts(parts, Bytes::copy_from_slice(&body));
    let response = api::handle(app, caller, request).await;
    response.map(|body| if body.is_empty() { Body::Empty } else { Body::Text(body) })
}

/// The router on the deployment's table, instances and state machine.
pub async fn app(config: &Config) -> Result<App, String> {
    app_on(config, &aws_config::load_from_env().await).await
}

/// The router on the AWS clients of `aws`.
pub async fn app_on(config: &Config, aws: &aws_config::SdkConfig) -> Result<App, String> {
    let deps = config::aws_deps(config, aws).await?;
    dbroles_lambda::app(config, &deps, aws)
}
