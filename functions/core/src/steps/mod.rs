//! The steps of the provisioning workflow and of the fleet workflow, one file
//! each with the same shape (`run(deps, input) -> output`), picked by [`Step`]
//! in one place ([`run`]). The step Lambda runs them on AWS (one binary, the
//! step chosen by its function's configuration) and the in-process executor
//! locally. The provisioning state machine (`statemachine/provision.asl.json`)
//! passes a small [`State`] between its steps; the job itself lives in the
//! store, and [`crate::lifecycle::jobs`] changes it. The fleet state machine
//! (`statemachine/fleet.asl.json`) passes the fleet job's id, and
//! [`crate::lifecycle::fleet`] changes the fleet job.

mod create_connections;
mod error;
mod finalize;
mod fleet_finish;
mod fleet_select;
mod fleet_start_job;
mod hook;
mod instance_status;
mod job;
mod master_credentials;
mod open_network;
mod provision;
mod resolve;
mod webhook;

use serde::{Deserialize, Serialize};

pub use crate::model::resource::DB_ARN_TAG;
pub use error::{CaughtError, ErrorType, StepError};
pub use hook::HOOK_OUTPUT_LIMIT;
pub use instance_status::MAX_STATUS_CHECKS;

use crate::deps::Deps;
use crate::workflow::ExecutionInput;

/// A Task of the state machine. Its resource is `${<Name>FunctionArn}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    Resolve,
    OpenNetwork,
    MasterCredentials,
    InstanceStatus,
    Provision,
    CreateConnections,
    Hook,
    Finalize,
    Webhook,
    FleetSelect,
    FleetStartJob,
    FleetFinish,
}

impl Step {
    /// The Tasks of the provisioning state machine.
    pub const PROVISION: [Step; 9] = [
        Step::Resolve,
        Step::OpenNetwork,
        Step::MasterCredentials,
        Step::InstanceStatus,
        Step::Provision,
        Step::CreateConnections,
        Step::Hook,
        Step::Finalize,
        Step::Webhook,
    ];

    /// The Tasks of the fleet state machine.
    pub const FLEET: [Step; 3] = [Step::FleetSelect, Step::FleetStartJob, Step::FleetFinish];

    /// Every step: the provisioning Tasks, then the fleet's.
    pub const ALL: [Step; 12] = {
        let mut all = [Step::Resolve; 12];
        let mut index = 0;
        while index < all.len() {
            all[index] = match index < Self::PROVISION.len() {
                true => Self::PROVISION[index],
                false => Self::FLEET[index - Self::PROVISION.len()],
            };
            index += 1;
        }
        all
    };

    /// The step's name: `DBROLES_STEP`, `events/<name>/`, and `dbroles-<name>` deployed.
    pub fn name(self) -> &'static str {
        match self {
            Step::Resolve => "resolve",
            Step::OpenNetwork => "open-network",
            Step::MasterCredentials => "master-credentials",
            Step::InstanceStatus => "instance-status",
            Step::Provision => "provision",
            Step::CreateConnections => "create-connections",
            Step::Hook => "hook",
            Step::Finalize => "finalize",
            Step::Webhook => "webhook",
            Step::FleetSelect => "fleet-select",
            Step::FleetStartJob => "fleet-start-job",
            Step::FleetFinish => "fleet-finish",
        }
    }

    /// The step a name names (`DBROLES_STEP`).
    pub fn named(name: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|step| step.name() == name)
    }

    /// The definition substitution naming the function's ARN.
    pub fn substitution(self) -> String {
        let pascal: String = self.name().split('-').map(|word| word[..1].to_uppercase() + &word[1..]).collect();
        format!("{pascal}FunctionArn")
    }

    /// The step a Task resource names: `${ResolveFunctionArn}`, or a deployed
    /// function's name or ARN (`...:function:dbroles-resolve`).
    pub fn from_resource(resource: &str) -> Option<Step> {
        let name = resource.rsplit(':').next().unwrap_or(resource);
        Step::ALL.into_iter().find(|step| {
            resource == format!("${{{}}}", step.substitution())
                || name == step.name()
                || name.strip_prefix("dbroles-") == Some(step.name())
        })
    }
}

/// What the state machine carries from step to step: which job, and the choices ahead.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub org_id: String,
    pub job_id: String,
    /// The request asked for a security group.
    #[serde(default)]
    pub open_network: bool,
    /// The master credentials can be read (after a reset: once the instance is available again).
    #[serde(default)]
    pub master_ready: bool,
    /// How often the instance's status was checked after a master password reset.
    #[serde(default)]
    pub status_checks: u32,
    #[serde(default)]
    pub create_connections: bool,
    #[serde(default)]
    pub send_webhook: bool,
    /// Set by a `Catch`: the error that ended the job early.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CaughtError>,
    /// Set by Finalize: how the job ended (the fleet's Map reads it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<crate::model::job::Phase>,
}

impl State {
    /// Which job the execution carries out.
    pub fn input(&self) -> ExecutionInput {
        ExecutionInput { org_id: self.org_id.clone(), job_id: self.job_id.clone() }
    }
}

/// What the fleet-finish step reads: the fleet job, and the error that ended its Map early, if one did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetState {
    pub org_id: String,
    pub fleet_job_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CaughtError>,
}

/// A string field of a step's input, for its span.
fn input_field(input: &serde_json::Value, name: &str) -> String {
    input.get(name).and_then(serde_json::Value::as_str).unwrap_or_default().to_string()
}

/// Runs one step on the state the state machine passed in; the new state out.
/// Every log line of the step, on AWS and locally, carries its job's ids and
/// organisation (the span's fields); a failure is logged with its error type.
#[tracing::instrument(
    name = "step",
    skip_all,
    fields(
        step = step.name(),
        job_id = input_field(&input, "job_id"),
        fleet_job_id = input_field(&input, "fleet_job_id"),
        org = input_field(&input, "org_id")
    )
)]
pub async fn run(step: Step, deps: &Deps, input: serde_json::Value) -> Result<serde_json::Value, StepError> {
    let result = run_step(step, deps, input).await;
    if let Err(error) = &result {
        tracing::warn!(error_type = error.error_type.as_str(), message = error.message, "step failed");
    }
    result
}

/// Each step is a file with one `run(deps, input)`; this is the one place that
/// picks it, parsing its input and serialising its output.
async fn run_step(step: Step, deps: &Deps, input: serde_json::Value) -> Result<serde_json::Value, StepError> {
    match step {
        Step::Resolve => call(step, input, |state| resolve::run(deps, state)).await,
        Step::OpenNetwork => call(step, input, |state| open_network::run(deps, state)).await,
        Step::MasterCredentials => call(step, input, |state| master_credentials::run(deps, state)).await,
        Step::InstanceStatus => call(step, input, |state| instance_status::run(deps, state)).await,
        Step::Provision => call(step, input, |state| provision::run(deps, state)).await,
        Step::CreateConnections => call(step, input, |state| create_connections::run(deps, state)).await,
        Step::Hook => call(step, input, |state| hook::run(deps, state)).await,
        Step::Finalize => call(step, input, |state| finalize::run(deps, state)).await,
        Step::Webhook => call(step, input, |state| webhook::run(deps, state)).await,
        Step::FleetSelect => call(step, input, |input| fleet_select::run(deps, input)).await,
        Step::FleetStartJob => call(step, input, |input| fleet_start_job::run(deps, input)).await,
        Step::FleetFinish => call(step, input, |state| fleet_finish::run(deps, state)).await,
    }
}

/// Runs `run` on the step's input, parsed; its output serialised.
async fn call<I, O, F>(step: Step, input: serde_json::Value, run: impl FnOnce(I) -> F) -> Result<serde_json::Value, StepError>
where
    I: serde::de::DeserializeOwned,
    O: Serialize,
    F: std::future::Future<Output = Result<O, StepError>>,
{
    let input = parse(step, input)?;
    Ok(to_value(run(input).await?))
}

fn parse<T: serde::de::DeserializeOwned>(step: Step, input: serde_json::Value) -> Result<T, StepError> {
    serde_json::from_value(input)
        .map_err(|e| StepError::new(ErrorType::InvalidInput, format!("the {} step's input: {e}", step.name())))
}

fn to_value<T: Serialize>(output: T) -> serde_json::Value {
    serde_json::to_value(output).expect("a step's output serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_name_their_steps() {
        assert_eq!(Step::OpenNetwork.substitution(), "OpenNetworkFunctionArn");
        assert_eq!(Step::from_resource("${OpenNetworkFunctionArn}"), Some(Step::OpenNetwork));
        assert_eq!(Step::from_resource("arn:aws:lambda:us-east-1:123456789012:function:dbroles-finalize"), Some(Step::Finalize));
        assert_eq!(Step::from_resource("arn:aws:lambda:us-east-1:123456789012:function:other"), None);
    }

    #[test]
    fn steps_are_found_by_name() {
        assert_eq!(Step::named("master-credentials"), Some(Step::MasterCredentials));
        assert_eq!(Step::named("nope"), None);
    }
}
