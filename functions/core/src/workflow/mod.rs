//! The `Workflow` port: starts (and stops) the execution that carries a job out.
//! [`StepFunctions`] starts the deployed state machine; [`InProcess`] runs the
//! job on this process's runtime (the local server).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::inventory::Inventory;
use crate::job::JobRecord;
use crate::runner::{self, Settings};
use crate::secrets::SecretStore;
use crate::store::JobStore;

#[async_trait]
pub trait Workflow: Send + Sync {
    /// Starts carrying out a stored job; returns the execution's id.
    async fn start(&self, record: &JobRecord) -> Result<String, String>;
    /// Stops an execution; stopping one that has ended is not an error.
    async fn stop(&self, execution: &str, cause: &str) -> Result<(), String>;
}

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

/// Starts the deployed state machine, one execution per job, named after the job.
pub struct StepFunctions {
    pub client: aws_sdk_sfn::Client,
    pub state_machine_arn: String,
}

#[async_trait]
impl Workflow for StepFunctions {
    async fn start(&self, record: &JobRecord) -> Result<String, String> {
        let input = serde_json::to_string(&ExecutionInput::of(record)).map_err(|e| e.to_string())?;
        let started = self
            .client
            .start_execution()
            .state_machine_arn(&self.state_machine_arn)
            .name(record.id())
            .input(input)
            .send()
            .await
            .map_err(|e| aws_sdk_sfn::error::DisplayErrorContext(e).to_string())?;
        Ok(started.execution_arn)
    }

    async fn stop(&self, execution: &str, cause: &str) -> Result<(), String> {
        let stopped =
            self.client.stop_execution().execution_arn(execution).error("Cancelled").cause(cause).send().await.map(|_| ());
        match stopped {
            Err(e) if e.as_service_error().is_some_and(|e| e.is_execution_does_not_exist()) => Ok(()),
            other => other.map_err(|e| aws_sdk_sfn::error::DisplayErrorContext(e).to_string()),
        }
    }
}

/// Runs jobs as tasks of this process.
pub struct InProcess {
    pub store: Arc<dyn JobStore>,
    pub inventory: Arc<dyn Inventory>,
    pub secrets: Arc<dyn SecretStore>,
    pub settings: Settings,
    pub running: Mutex<HashMap<String, tokio::task::AbortHandle>>,
}

impl InProcess {
    pub fn new(
        store: Arc<dyn JobStore>,
        inventory: Arc<dyn Inventory>,
        secrets: Arc<dyn SecretStore>,
        settings: Settings,
    ) -> Self {
        Self { store, inventory, secrets, settings, running: Mutex::default() }
    }
}

#[async_trait]
impl Workflow for InProcess {
    async fn start(&self, record: &JobRecord) -> Result<String, String> {
        let (store, inventory, secrets, settings) =
            (self.store.clone(), self.inventory.clone(), self.secrets.clone(), self.settings.clone());
        let mut record = record.clone();
        let execution = format!("local:{}", record.id());
        let task = tokio::spawn(async move {
            runner::provision(&mut record, inventory.as_ref(), secrets.as_ref(), &settings).await;
            if let Err(error) = runner::finalize(&mut record, store.as_ref(), &settings).await {
                eprintln!("dbroles: finishing job {} failed: {error}", record.id());
            }
        });
        let mut running = self.running.lock().expect("the task table is never poisoned");
        running.retain(|_, handle| !handle.is_finished());
        running.insert(execution.clone(), task.abort_handle());
        Ok(execution)
    }

    async fn stop(&self, execution: &str, _cause: &str) -> Result<(), String> {
        if let Some(task) = self.running.lock().expect("the task table is never poisoned").remove(execution) {
            task.abort();
        }
        Ok(())
    }
}
