//! What every dbroles Lambda shares: its configuration from the environment, its
//! AWS clients, JSON logs, and the runtime loop around a step or trigger handler.

use std::sync::Arc;

use dbroles_core::api::App;
use dbroles_core::config::{self, Config};
use dbroles_core::steps::{self, Deps, Step};
use dbroles_core::triggers::{self, TriggerSettings};
use dbroles_core::workflow::StepFunctions;
use lambda_runtime::{service_fn, Diagnostic, Error, LambdaEvent};
use serde_json::Value;

/// JSON logs without timestamps (CloudWatch adds them), at the level `RUST_LOG` names (`info` by default).
pub fn init_tracing() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().json().without_time().with_target(false).with_env_filter(filter).init();
}

/// The router's dependencies on the deployment: the table, RDS and the state machine.
pub fn app(config: &Config, deps: &Deps, aws: &aws_config::SdkConfig) -> Result<App, String> {
    let state_machine_arn = config.state_machine_arn.clone().ok_or("DBROLES_STATE_MACHINE_ARN is not set")?;
    Ok(App {
        jobs: deps.jobs.clone(),
        resources: deps.resources.clone(),
        inventory: deps.inventory.clone(),
        workflow: Arc::new(StepFunctions { client: aws_sdk_sfn::Client::new(aws), state_machine_arn }),
        settings: deps.settings.clone(),
    })
}

/// One step's answer: the new state, or the error `Retry` and `Catch` match on.
pub async fn handle_step(step: Step, deps: &Deps, payload: Value) -> Result<Value, Diagnostic> {
    steps::run(step, deps, payload).await.map_err(|error| {
        tracing::warn!(step = step.name(), error_type = error.type_name(), message = error.message, "step failed");
        Diagnostic { error_type: error.type_name(), error_message: error.message }
    })
}

/// The Lambda of one step.
pub async fn run_step(step: Step) -> Result<(), Error> {
    init_tracing();
    let config = Config::from_env()?;
    let aws = aws_config::load_from_env().await;
    let deps = Arc::new(config::aws_deps(&config, &aws).await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let deps = deps.clone();
        async move { handle_step(step, &deps, event.payload).await }
    }))
    .await
}

/// The trigger settings from `DBROLES_PROVISION_TAG` (`key=value`), `DBROLES_DEFAULT_ORG`
/// and `DBROLES_DEFAULT_AGENT_ID`.
pub fn trigger_settings() -> Result<TriggerSettings, String> {
    let mut settings = TriggerSettings::default();
    if let Some(tag) = config::var("DBROLES_PROVISION_TAG") {
        let (key, value) = tag.split_once('=').ok_or_else(|| format!("DBROLES_PROVISION_TAG={tag}: expected key=value"))?;
        (settings.tag_key, settings.tag_value) = (key.trim().into(), value.trim().into());
    }
    if let Some(org) = config::var("DBROLES_DEFAULT_ORG") {
        settings.default_org = org;
    }
    settings.default_agent_id = config::var("DBROLES_DEFAULT_AGENT_ID");
    Ok(settings)
}

/// One EventBridge event's answer.
pub async fn handle_trigger(app: &App, settings: &TriggerSettings, payload: Value) -> Result<Value, Diagnostic> {
    match triggers::handle(app, settings, &payload).await {
        Ok(outcome) => {
            tracing::info!(?outcome, "trigger handled");
            Ok(serde_json::to_value(outcome).expect("an outcome serialises"))
        }
        Err(message) => Err(Diagnostic { error_type: "TriggerFailed".into(), error_message: message }),
    }
}

/// The Lambda of the EventBridge rules.
pub async fn run_triggers() -> Result<(), Error> {
    init_tracing();
    let config = Config::from_env()?;
    let aws = aws_config::load_from_env().await;
    let deps = config::aws_deps(&config, &aws).await?;
    let app = Arc::new(app(&config, &deps, &aws)?);
    let settings = Arc::new(trigger_settings()?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let (app, settings) = (app.clone(), settings.clone());
        async move { handle_trigger(&app, &settings, event.payload).await }
    }))
    .await
}
