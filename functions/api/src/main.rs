//! The API Lambda's entry point.

use std::sync::Arc;

use dbroles_core::config::Config;
use lambda_http::{service_fn, Error, Request};

#[tokio::main]
async fn main() -> Result<(), Error> {
    dbroles_lambda::init_tracing();
    let config = Config::from_env()?;
    let app = Arc::new(dbroles_api::app(&config).await?);
    let org_claim: Arc<str> = config.org_claim.into();
    lambda_http::run(service_fn(move |event: Request| {
        let (app, org_claim) = (app.clone(), org_claim.clone());
        async move { Ok::<_, Error>(dbroles_api::handle(&app, &org_claim, event).await) }
    }))
    .await
}
