//! The API Lambda's entry point: the router, run by `lambda_http`.

use std::sync::Arc;

use dbroles_core::config::Config;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    dbroles_lambda::init_tracing();
    let config = Config::from_env()?;
    dbroles_lambda::init_metrics(&config);
    let app = dbroles_api::app_on(&config, &aws_config::load_from_env().await).await?;
    // Each request's metrics (jobs started) as EMF lines once it is answered.
    let router = dbroles_api::router(Arc::new(app), &config.org_claim).layer(axum::middleware::map_response(
        |response: axum::response::Response| async move {
            dbroles_lambda::flush_metrics(&Default::default());
            response
        },
    ));
    lambda_http::run(router).await
}
