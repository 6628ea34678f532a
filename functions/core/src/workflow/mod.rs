//! The `Workflow` port: starts (and stops) the execution that carries a job, or a
//! fleet job, out. [`StepFunctions`] starts the deployed state machines; [`Local`]
//! runs the same definitions with the [`asl`] executor in this process (the local
//! CLI and server).

pub mod asl;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::deps::Deps;
use crate::lifecycle::fleet::{self, FleetError};
use crate::lifecycle::jobs;
use crate::model::fleet::{FleetInput, FleetRecord};
use crate::model::job::JobRecord;
use crate::steps::CaughtError;
use crate::store::StoreError;
use asl::{Executor, Progress};

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

/// What to tell about each state of a local execution as it happens.
pub type Reporter = Arc<dyn Fn(Progress<'_>) + Send + Sync>;

/// Runs the provisioning and fleet definitions in this process (the local CLI and server).
pub struct Local {
    pub executor: Arc<Executor>,
    /// The fleet definition, whose Map runs `executor` per instance.
    pub fleet: Arc<Executor>,
    pub deps: Deps,
    reporter: Reporter,
    running: Mutex<HashMap<String, Running>>,
}

/// What a local execution carries out.
#[derive(Clone)]
enum Input {
    Job(ExecutionInput),
    Fleet(FleetInput),
}

/// A local execution: what it carries out, and the task doing it.
struct Running {
    input: Input,
    task: tokio::task::JoinHandle<()>,
}

impl Local {
    /// Runs jobs with `executor` (the provisioning definition), and fleet jobs with the fleet definition around it.
    pub fn new(executor: Executor, deps: Deps) -> Self {
        let executor = Arc::new(executor);
        let fleet = Arc::new(Executor::fleet(executor.clone()));
        Self { executor, fleet, deps, reporter: Arc::new(|_| {}), running: Mutex::default() }
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

/// A job's execution started by another (a fleet's Map): its output, or its error
/// once its job has been repaired, as the status-change rule does on AWS.
pub(crate) async fn run_execution(
    executor: &Executor,
    deps: &Deps,
    input: serde_json::Value,
    progress: &(dyn Fn(Progress<'_>) + Send + Sync),
) -> Result<serde_json::Value, CaughtError> {
    let output = executor.execute(deps, input.clone(), progress).await;
    if let (Err(error), Ok(job)) = (&output, serde_json::from_value::<ExecutionInput>(input)) {
        let message = format!("the execution failed: {}", error.message());
        if let Err(store) = jobs::repair(deps.jobs.as_ref(), &job, &message, &deps.settings).await {
            tracing::error!(job_id = job.job_id, %store, "the failed execution's job could not be repaired");
        }
    }
    output
}

async fn execute_fleet(
    executor: &Executor,
    deps: &Deps,
    input: FleetInput,
    progress: &(dyn Fn(Progress<'_>) + Send + Sync),
) -> Result<(), FleetError> {
    let value = serde_json::to_value(&input).expect("the input serialises");
    if let Err(error) = executor.execute(deps, value, progress).await {
        fleet::repair(deps, &input, &format!("the execution failed: {}", error.message())).await?;
    }
    Ok(())
}

#[async_trait]
impl Workflow for Local {
    /// `local:<pid>:<job id>`: the process that runs it is part of the name, so
    /// another process (a second `dbroles run`, a restarted `serve`) can tell
    /// whether the execution still has a process behind it.
    fn execution_id(&self, job_id: &str) -> String {
        format!("local:{}:{job_id}", std::process::id())
    }

    fn fleet_execution_id(&self, fleet_job_id: &str) -> Option<String> {
        Some(format!("local:{}:fleet:{fleet_job_id}", std::process::id()))
    }

    async fn start(&self, record: &JobRecord) -> Result<(), WorkflowError> {
        let (executor, deps, input) = (self.executor.clone(), self.deps.clone(), ExecutionInput::of(record));
        let reporter = self.reporter.clone();
        let execution = self.execution_id(record.id());
        let task = tokio::spawn(async move {
            if let Err(error) = execute(&executor, &deps, input.clone(), &*reporter).await {
                tracing::error!(job_id = input.job_id, %error, "the job could not be finished");
            }
        });
        self.track(execution, Input::Job(ExecutionInput::of(record)), task);
        Ok(())
    }

    async fn start_fleet(&self, record: &FleetRecord) -> Result<(), WorkflowError> {
        let (executor, deps, input) = (self.fleet.clone(), self.deps.clone(), FleetInput::of(record));
        let reporter = self.reporter.clone();
        let execution = self.fleet_execution_id(record.id()).expect("the local executor runs fleets");
        let task = tokio::spawn(async move {
            if let Err(error) = execute_fleet(&executor, &deps, input.clone(), &*reporter).await {
                tracing::error!(fleet_job_id = input.fleet_job_id, %error, "the fleet job could not be finished");
            }
        });
        self.track(execution, Input::Fleet(FleetInput::of(record)), task);
        Ok(())
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
        let released = match input {
            Input::Job(input) => jobs::repair(self.deps.jobs.as_ref(), &input, &message, &self.deps.settings).await.map(|_| ()),
            Input::Fleet(input) => self.repair_fleet(&input, &message).await,
        };
        released.map_err(|error| WorkflowError(format!("the stopped execution's job could not be released: {error}")))
    }

    /// This process's executions as its task table has them; another process's
    /// run while that process lives (after a restart, every earlier one is missing).
    async fn execution_state(&self, execution: &str) -> Result<ExecutionState, WorkflowError> {
        let pid =
            execution.strip_prefix("local:").and_then(|rest| rest.split(':').next()).and_then(|pid| pid.parse::<u32>().ok());
        match pid {
            Some(pid) if pid != std::process::id() => {
                let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
                return Ok(if alive { ExecutionState::Running } else { ExecutionState::Missing });
            }
            _ => {}
        }
        let running = self.running.lock().expect("the task table is never poisoned");
        Ok(match running.get(execution) {
            Some(Running { task, .. }) if !task.is_finished() => ExecutionState::Running,
            Some(_) => ExecutionState::Ended,
            None => ExecutionState::Missing,
        })
    }
}

impl Local {
    /// Remembers a started execution (forgetting those that ended).
    fn track(&self, execution: String, input: Input, task: tokio::task::JoinHandle<()>) {
        let mut running = self.running.lock().expect("the task table is never poisoned");
        running.retain(|_, running| !running.task.is_finished());
        running.insert(execution, Running { input, task });
    }

    /// After a fleet's execution was aborted: the fleet job fails if it still runs,
    /// and so does each of its jobs whose in-process execution went with it, their locks released.
    async fn repair_fleet(&self, input: &FleetInput, message: &str) -> Result<(), StoreError> {
        let deps = &self.deps;
        if let Err(error) = fleet::repair(deps, input, message).await {
            tracing::error!(fleet_job_id = input.fleet_job_id, %error, "the stopped fleet job could not be repaired");
        }
        let query = crate::store::JobQuery {
            fleet_job_id: Some(input.fleet_job_id.clone()),
            limit: crate::model::fleet::MAX_INSTANCES,
            ..Default::default()
        };
        for job in deps.jobs.list_jobs(&input.org_id, &query).await?.items {
            let job = ExecutionInput { org_id: input.org_id.clone(), job_id: job.id };
            jobs::repair(deps.jobs.as_ref(), &job, message, &deps.settings).await?;
        }
        Ok(())
    }
}
