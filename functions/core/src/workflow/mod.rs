//! The `Workflow` port: starts (and stops) the execution that carries a job out.
//! [`StepFunctions`] starts the deployed state machine; [`Local`] runs the same
//! definition with the [`asl`] executor in this process (the local CLI and server).

pub mod asl;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::deps::Deps;
use crate::job::JobRecord;
use crate::jobs;
use crate::store::StoreError;
use asl::{Executor, Progress};

#[async_trait]
pub trait Workflow: Send + Sync {
    /// Starts carrying out a stored job; returns the execution's id.
    async fn start(&self, record: &JobRecord) -> Result<String, WorkflowError>;
    /// Stops an execution; stopping one that has ended is not an error. Its end
    /// is reported as any other's (the status-change rule, or the local executor),
    /// which releases the job's lock.
    async fn stop(&self, execution: &str, cause: &str) -> Result<(), WorkflowError>;
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

/// Starts the deployed state machine, one execution per job, named after the job.
pub struct StepFunctions {
    pub client: aws_sdk_sfn::Client,
    pub state_machine_arn: String,
}

#[async_trait]
impl Workflow for StepFunctions {
    async fn start(&self, record: &JobRecord) -> Result<String, WorkflowError> {
        let input = serde_json::to_string(&ExecutionInput::of(record)).map_err(|e| WorkflowError(e.to_string()))?;
        let started = self
            .client
            .start_execution()
            .state_machine_arn(&self.state_machine_arn)
            .name(record.id())
            .input(input)
            .send()
            .await
            .map_err(|e| WorkflowError(crate::aws::describe(&e)))?;
        Ok(started.execution_arn)
    }

    async fn stop(&self, execution: &str, cause: &str) -> Result<(), WorkflowError> {
        let stopped =
            self.client.stop_execution().execution_arn(execution).error("Cancelled").cause(cause).send().await.map(|_| ());
        match stopped {
            Err(e) if e.as_service_error().is_some_and(|e| e.is_execution_does_not_exist()) => Ok(()),
            other => other.map_err(|e| WorkflowError(crate::aws::describe(&e))),
        }
    }
}

/// What to tell about each state of a local execution as it happens.
pub type Reporter = Arc<dyn Fn(Progress<'_>) + Send + Sync>;

/// Runs the provisioning definition in this process (the local CLI and server).
pub struct Local {
    pub executor: Arc<Executor>,
    pub deps: Deps,
    reporter: Reporter,
    running: Mutex<HashMap<String, Running>>,
}

/// A local execution: what it carries out, and the task doing it.
struct Running {
    input: ExecutionInput,
    task: tokio::task::JoinHandle<()>,
}

impl Local {
    pub fn new(executor: Executor, deps: Deps) -> Self {
        Self { executor: Arc::new(executor), deps, reporter: Arc::new(|_| {}), running: Mutex::default() }
    }

    /// Reports every state of every execution to `reporter` (the CLI prints them).
    pub fn reporting(self, reporter: Reporter) -> Self {
        Self { reporter, ..self }
    }

    /// Carries out a stored job to its end, reporting progress as it goes.
    pub async fn execute(&self, record: &JobRecord, progress: &(dyn Fn(Progress<'_>) + Send + Sync)) -> Result<(), StoreError> {
        execute(&self.executor, &self.deps, ExecutionInput::of(record), progress).await
    }

    /// Waits until the execution `start` returned has ended.
    pub async fn wait(&self, execution: &str) {
        let running = self.running.lock().expect("the task table is never poisoned").remove(execution);
        if let Some(Running { task, .. }) = running {
            // A task that panicked or was aborted has ended all the same.
            let _ = task.await;
        }
    }
}

async fn execute(
    executor: &Executor,
    deps: &Deps,
    input: ExecutionInput,
    progress: &(dyn Fn(Progress<'_>) + Send + Sync),
) -> Result<(), StoreError> {
    let value = serde_json::to_value(&input).expect("the input serialises");
    if let Err(error) = executor.execute(deps, value, progress).await {
        // What the status-change rule does on AWS.
        let message = format!("the execution failed: {}", error.message());
        jobs::repair(deps.jobs.as_ref(), &input, &message, &deps.settings).await?;
    }
    Ok(())
}

#[async_trait]
impl Workflow for Local {
    async fn start(&self, record: &JobRecord) -> Result<String, WorkflowError> {
        let (executor, deps, input) = (self.executor.clone(), self.deps.clone(), ExecutionInput::of(record));
        let reporter = self.reporter.clone();
        let execution = format!("local:{}", record.id());
        let task = tokio::spawn(async move {
            if let Err(error) = execute(&executor, &deps, input.clone(), &*reporter).await {
                tracing::error!(job_id = input.job_id, %error, "the job could not be finished");
            }
        });
        let mut running = self.running.lock().expect("the task table is never poisoned");
        running.retain(|_, running| !running.task.is_finished());
        running.insert(execution.clone(), Running { input: ExecutionInput::of(record), task });
        Ok(execution)
    }

    /// Aborts the execution at its next await, waits for it to end, and then does
    /// what the status-change rule does on AWS: the job fails if it still runs,
    /// and its lock is released.
    async fn stop(&self, execution: &str, cause: &str) -> Result<(), WorkflowError> {
        let running = self.running.lock().expect("the task table is never poisoned").remove(execution);
        let Some(Running { input, task }) = running else { return Ok(()) };
        task.abort();
        let _ = task.await;
        let message = format!("the execution was stopped: {cause}");
        jobs::repair(self.deps.jobs.as_ref(), &input, &message, &self.deps.settings)
            .await
            .map_err(|error| WorkflowError(format!("the stopped execution's job could not be released: {error}")))?;
        Ok(())
    }
}
