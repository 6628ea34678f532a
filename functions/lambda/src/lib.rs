//! What every dbroles Lambda shares: its configuration and AWS clients, JSON
//! logs, and the runtime loop around the step and trigger handlers. The API
//! Lambda runs the axum router ([`dbroles_core::api`]) through `lambda_http`.

use std::sync::Arc;

use dbroles_core::config::{Config, ConfigError, TriggerSettings};
use dbroles_core::deps::{App, Deps};
use dbroles_core::steps::{self, Step, StepError};
use dbroles_core::triggers;
use lambda_runtime::{service_fn, Diagnostic, Error, LambdaEvent};
use serde_json::Value;

/// JSON logs without timestamps (CloudWatch adds them), at the level `RUST_LOG`
/// names (`info` by default), never the drivers' statements ([`dbroles_core::config::log_filter`]).
pub fn init_tracing() {
    let filter = dbroles_core::config::log_filter();
    tracing_subscriber::fmt().json().without_time().with_target(false).with_env_filter(filter).init();
}

/// Installs the EMF metrics collector ([`dbroles_core::metrics`]) under the deployment's namespace.
pub fn init_metrics(config: &Config) {
    if let Err(error) = dbroles_core::metrics::install(&config.metrics_namespace) {
        tracing::warn!(%error, "no metrics: the collector could not be installed");
    }
}

/// After an invocation: its metrics as EMF lines on stdout, with the job's (or
/// fleet job's) organisation and id as properties, never as dimensions.
pub fn flush_metrics(payload: &Value) {
    let properties: Vec<(&str, &str)> = ["org_id", "job_id", "fleet_job_id"]
        .into_iter()
        .filter_map(|name| payload.get(name).and_then(Value::as_str).map(|value| (name, value)))
        .collect();
    if let Err(error) = dbroles_core::metrics::flush(&properties, std::io::stdout()) {
        tracing::warn!(%error, "the metrics were not written");
    }
}

/// The configuration, the AWS clients and the dependencies they make, read once at start.
pub async fn deps() -> Result<(Config, aws_config::SdkConfig, Deps), ConfigError> {
    let config = Config::from_env()?;
    init_metrics(&config);
    let aws = aws_config::load_from_env().await;
    let deps = dbroles_core::wiring::aws(&config, &aws).await?;
    Ok((config, aws, deps))
}

/// One step's answer: the new state, or the error `Retry` and `Catch` match on.
/// One step's answer; its log lines carry its job's ids and organisation ([`steps::run`]'s span).
pub async fn handle_step(step: Step, deps: &Deps, payload: Value) -> Result<Value, Diagnostic> {
    steps::run(step, deps, payload).await.map_err(|error: StepError| Diagnostic::from(error))
}

/// The step this function runs: `DBROLES_STEP`, which the template sets per function.
pub fn step_of(config: &Config) -> Result<Step, ConfigError> {
    let name = config.step.as_deref().ok_or("DBROLES_STEP is not set: the step this function runs")?;
    Step::named(name).ok_or_else(|| {
        let known: Vec<&str> = Step::ALL.iter().map(|step| step.name()).collect();
        ConfigError(format!("DBROLES_STEP={name}: expected one of {}", known.join(", ")))
    })
}

/// The step Lambda: the step `DBROLES_STEP` names.
pub async fn run_step() -> Result<(), Error> {
    init_tracing();
    let (config, _, deps) = deps().await?;
    let step = step_of(&config)?;
    let deps = Arc::new(deps);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let deps = deps.clone();
        async move {
            let answer = handle_step(step, &deps, event.payload.clone()).await;
            flush_metrics(&event.payload);
            answer
        }
    }))
    .await
}

/// One EventBridge event's answer.
pub async fn handle_trigger(app: &App, settings: &TriggerSettings, payload: Value) -> Result<Value, Diagnostic> {
    match triggers::handle(app, settings, &payload).await {
        Ok(outcome) => {
            tracing::info!(?outcome, "trigger handled");
            Ok(serde_json::to_value(outcome).expect("an outcome serialises"))
        }
        Err(error) => Err(Diagnostic { error_type: "TriggerFailed".into(), error_message: error.to_string() }),
    }
}

/// The Lambda of the EventBridge rules.
pub async fn run_triggers() -> Result<(), Error> {
    init_tracing();
    let (config, aws, deps) = deps().await?;
    let app = Arc::new(dbroles_core::wiring::aws_app(&config, &deps, &aws)?);
    let settings = Arc::new(config.triggers.clone());
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let (app, settings) = (app.clone(), settings.clone());
        async move {
            let answer = handle_trigger(&app, &settings, event.payload).await;
            flush_metrics(&Value::Null);
            answer
        }
    }))
    .await
}
