//! A workflow whose executions never end on their own (a Lambda killed mid-step,
//! an event lost): it records what was started and stopped, and the test ends an
//! execution by delivering the status-change event the rule would.

use std::sync::Mutex;

use dbroles_core::model::fleet::FleetRecord;
use dbroles_core::model::job::JobRecord;
use dbroles_core::workflow::{ExecutionState, Workflow, WorkflowError};
use serde_json::{json, Value};

#[derive(Default)]
pub struct Held {
    pub started: Mutex<Vec<String>>,
    pub stopped: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Workflow for Held {
    fn execution_id(&self, job_id: &str) -> String {
        format!("held:{job_id}")
    }

    fn fleet_execution_id(&self, fleet_job_id: &str) -> Option<String> {
        Some(format!("held:{fleet_job_id}"))
    }

    async fn start(&self, record: &JobRecord) -> Result<(), WorkflowError> {
        self.started.lock().unwrap().push(record.id().to_string());
        Ok(())
    }

    async fn start_fleet(&self, record: &FleetRecord) -> Result<(), WorkflowError> {
        self.started.lock().unwrap().push(record.id().to_string());
        Ok(())
    }

    async fn stop(&self, execution: &str, _cause: &str) -> Result<(), WorkflowError> {
        self.stopped.lock().unwrap().push(execution.to_string());
        Ok(())
    }

    /// Started and not stopped: running; stopped: ended; never started: missing.
    async fn execution_state(&self, execution: &str) -> Result<ExecutionState, WorkflowError> {
        let id = execution.strip_prefix("held:").unwrap_or(execution);
        if self.stopped.lock().unwrap().iter().any(|stopped| stopped == execution) {
            return Ok(ExecutionState::Ended);
        }
        match self.started.lock().unwrap().iter().any(|started| started == id) {
            true => Ok(ExecutionState::Running),
            false => Ok(ExecutionState::Missing),
        }
    }
}

/// The EventBridge event of an execution of job `id` of `org` that ended with `status`.
pub fn execution_ended(org: &str, id: &str, status: &str) -> Value {
    let execution = format!("arn:aws:states:us-east-1:123456789012:execution:dbroles-provision:{id}");
    json!({
        "version": "0", "id": "315c1398-40ff-a850-213b-158f73e60175",
        "detail-type": "Step Functions Execution Status Change", "source": "aws.states",
        "account": "123456789012", "time": "2026-11-22T10:00:00Z", "region": "us-east-1",
        "resources": [execution],
        "detail": {
            "executionArn": execution,
            "stateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:dbroles-provision",
            "name": id, "status": status, "startDate": 1795345200000_i64, "stopDate": 1795345260000_i64,
            "input": json!({"org_id": org, "job_id": id}).to_string(), "output": null, "error": null, "cause": null
        }
    })
}
