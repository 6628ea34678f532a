//! The API Lambda's entry point: the router, run by `lambda_http`.

use std::sync::Arc;

use dbroles_core::config::Config;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    dbroles_lambda::init_tracing();
    let config = Config::from_env()?;
    let app = dbroles_api::app_on(&config, &aws_config::load_from_env().await).await?;
    lambda_http::run(dbroles_api::router(Arc::new(app), &config.org_claim)).await
}
