//! The Step Functions adapter of the [`Workflow`] port: one execution of the
//! deployed state machine per job (or fleet job), named after it.

use async_trait::async_trait;
use serde::Serialize;

use super::{execution_arn, ExecutionInput, ExecutionState, Workflow, WorkflowError};
use crate::model::fleet::{FleetInput, FleetRecord};
use crate::model::job::JobRecord;

/// Starts the deployed state machines, one execution per job (or fleet job), named after it.
pub struct StepFunctions {
    pub client: aws_sdk_sfn::Client,
    pub state_machine_arn: String,
    /// The fleet state machine, if the deployment has one.
    pub fleet_state_machine_arn: Option<String>,
}

impl StepFunctions {
    async fn start_execution(&self, machine: &str, name: &str, input: &impl Serialize) -> Result<(), WorkflowError> {
        let input = serde_json::to_string(input).map_err(|e| WorkflowError(e.to_string()))?;
        self.client
            .start_execution()
            .state_machine_arn(machine)
            .name(name)
            .input(input)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| WorkflowError(crate::aws::describe(&e)))
    }
}

#[async_trait]
impl Workflow for StepFunctions {
    fn execution_id(&self, job_id: &str) -> String {
        execution_arn(&self.state_machine_arn, job_id)
    }

    fn fleet_execution_id(&self, fleet_job_id: &str) -> Option<String> {
        self.fleet_state_machine_arn.as_deref().map(|machine| execution_arn(machine, fleet_job_id))
    }

    async fn start(&self, record: &JobRecord) -> Result<(), WorkflowError> {
        self.start_execution(&self.state_machine_arn, record.id(), &ExecutionInput::of(record)).await
    }

    async fn start_fleet(&self, record: &FleetRecord) -> Result<(), WorkflowError> {
        let machine = self.fleet_state_machine_arn.as_deref().ok_or_else(|| {
            WorkflowError("DBROLES_FLEET_STATE_MACHINE_ARN is not set: this deployment has no fleet state machine".into())
        })?;
        self.start_execution(machine, record.id(), &FleetInput::of(record)).await
    }

    async fn stop(&self, execution: &str, cause: &str) -> Result<(), WorkflowError> {
        let stopped =
            self.client.stop_execution().execution_arn(execution).error("Cancelled").cause(cause).send().await.map(|_| ());
        match stopped {
            Err(e) if e.as_service_error().is_some_and(|e| e.is_execution_does_not_exist()) => Ok(()),
            other => other.map_err(|e| WorkflowError(crate::aws::describe(&e))),
        }
    }

    async fn execution_state(&self, execution: &str) -> Result<ExecutionState, WorkflowError> {
        match self.client.describe_execution().execution_arn(execution).send().await {
            Ok(out) if out.status == aws_sdk_sfn::types::ExecutionStatus::Running => Ok(ExecutionState::Running),
            Ok(_) => Ok(ExecutionState::Ended),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_execution_does_not_exist()) => Ok(ExecutionState::Missing),
            Err(e) => Err(WorkflowError(crate::aws::describe(&e))),
        }
    }
}
