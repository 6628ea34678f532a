//! The API Lambda: an API Gateway HTTP API event in, the shared router's answer out.
//! API Gateway's JWT authorizer has checked the token; the claims arrive in the
//! request context.

use std::sync::Arc;

use bytes::Bytes;
use dbroles_core::api::{self, App};
use dbroles_core::auth::{caller_from_claims, AuthError, Caller};
use dbroles_core::config::Config;
use dbroles_core::inventory::rds::RdsInventory;
use dbroles_core::store::dynamodb::DynamoStore;
use dbroles_core::workflow::StepFunctions;
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
    let aws = aws_config::load_from_env().await;
    let state_machine_arn = config.state_machine_arn.clone().ok_or("DBROLES_STATE_MACHINE_ARN is not set")?;
    let store = Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), &config.table));
    let inventory = RdsInventory::new(&aws, config.endpoint_overrides.clone())
        .with_secret_prefix(&config.secret_prefix)
        .with_cross_account_role(config.cross_account_role.clone());
    let workflow = StepFunctions { client: aws_sdk_sfn::Client::new(&aws), state_machine_arn };
    Ok(App {
        jobs: store.clone(),
        resources: store,
        inventory: Arc::new(inventory),
        workflow: Arc::new(workflow),
        settings: config.settings.clone(),
    })
}
