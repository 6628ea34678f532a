//! The `Workflow` port: starts (and stops) the execution that carries a job, or a
//! fleet job, out, and its types. Its adapters: [`step_functions`] starts the
//! deployed state machines; [`crate::executor`] runs the same definitions in
//! this process (the local CLI and server).

pub mod step_functions;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::model::fleet::FleetRecord;
use crate::model::job::JobRecord;

#[async_trait]
pub trait Workflow: Send + Sync {
    /// The id of the execution [`Workflow::start`] starts for the job `job_id`.
    /// Executions are named after their jobs, so a job is stored naming its
    /// execution: no step, racing the start, can write the job without it.
    fn execution_id(&self, job_id: &str) -> String;
    /// The id of the execution [`Workflow::start_fleet`] starts for a fleet job,
    /// if the deployment has a fleet state machine.
    fn fleet_execution_id(&self, fleet_job_id: &str) -> Option<String>;
    /// Starts carrying out a stored job, as the execution [`Workflow::execution_id`] names.
    async fn start(&self, record: &JobRecord) -> Result<(), WorkflowError>;
    /// Starts carrying out a stored fleet job, as the execution [`Workflow::fleet_execution_id`] names.
    async fn start_fleet(&self, record: &FleetRecord) -> Result<(), WorkflowError>;
    /// Stops an execution; stopping one that has ended is not an error. Its end
    /// is reported as any other's (the status-change rule, or the local executor),
    /// which releases the job's lock.
    async fn stop(&self, execution: &str, cause: &str) -> Result<(), WorkflowError>;
    /// Whether an execution runs, has ended, or does not exist (never started,
    /// or lost with the process that ran it).
    async fn execution_state(&self, execution: &str) -> Result<ExecutionState, WorkflowError>;
}

/// The state of the execution a record names, `Missing` if it names none (it
/// was stored before its execution had a name, or never got one).
pub async fn state_of(workflow: &dyn Workflow, execution: Option<&str>) -> Result<ExecutionState, WorkflowError> {
    match execution {
        Some(execution) => workflow.execution_state(execution).await,
        None => Ok(ExecutionState::Missing),
    }
}

/// What [`Workflow::execution_state`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutionState {
    Running,
    Ended,
    Missing,
}

/// The workflow engine refused or could not be reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WorkflowError(pub String);

/// What an execution starts from: which job to carry out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionInput {
    pub org_id: String,
    pub job_id: String,
}

impl ExecutionInput {
    pub fn of(record: &JobRecord) -> Self {
        Self { org_id: record.org().to_string(), job_id: record.id().to_string() }
    }
}

/// The ARN of the execution of `state_machine_arn` named `name`, as `StartExecution` returns it.
pub fn execution_arn(state_machine_arn: &str, name: &str) -> String {
    format!("{}:{name}", state_machine_arn.replacen(":stateMachine:", ":execution:", 1))
}
