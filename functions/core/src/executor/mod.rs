//! The in-process executor: the `Workflow` port's local adapter. [`Local`] runs
//! the provisioning and fleet definitions in this process (the local CLI and
//! server), with the Amazon States Language executor split into the
//! definition types (`definition.rs`), their checks when loaded (`checks.rs`),
//! and the interpreter (`interpreter.rs`), whose Tasks run the steps through
//! [`InProcess`].

mod checks;
mod definition;
mod interpreter;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::Value;

pub use definition::{DefinitionError, Executor, Machines, FLEET_DEFINITION, PROVISION_DEFINITION};
pub use interpreter::{Progress, Tasks};

use crate::deps::Deps;
use crate::lifecycle::fleet::{self, FleetError};
use crate::lifecycle::jobs;
use crate::model::fleet::{FleetInput, FleetRecord};
use crate::model::job::JobRecord;
use crate::steps::{self, Step, StepError};
use crate::store::StoreError;
use crate::workflow::{ExecutionInput, ExecutionState, Workflow, WorkflowError};

/// The steps, run in this process on `Deps`: how the interpreter runs Tasks locally.
pub struct InProcess(pub Deps);

#[async_trait]
impl Tasks for InProcess {
    async fn run(&self, step: Step, input: Value) -> Result<Value, StepError> {
        steps::run(step, &self.0, input).await
    }

    /// The failed child's job is repaired, as the status-change rule does on AWS.
    async fn execution_failed(&self, input: &Value, message: &str) {
        let Ok(job) = serde_json::from_value::<ExecutionInput>(input.clone()) else { return };
        if let Err(store) = jobs::repair(self.0.jobs.as_ref(), &job, message, &self.0.settings).await {
            tracing::error!(job_id = job.job_id, %store, "the failed execution's job could not be repaired");
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
    if let Err(error) = executor.execute(&InProcess(deps.clone()), value, progress).await {
        // What the status-change rule does on AWS.
        let message = format!("the execution failed: {}", error.message());
        jobs::repair(deps.jobs.as_ref(), &input, &message, &deps.settings).await?;
    }
    Ok(())
}

async fn execute_fleet(
    executor: &Executor,
    deps: &Deps,
    input: FleetInput,
    progress: &(dyn Fn(Progress<'_>) + Send + Sync),
) -> Result<(), FleetError> {
    let value = serde_json::to_value(&input).expect("the input serialises");
    if let Err(error) = executor.execute(&InProcess(deps.clone()), value, progress).await {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::definition::Target;
    use super::*;

    /// Every Lambda Task, in both definitions: a throttled Lambda (a busy tenant's
    /// jobs) is retried on a longer back-off of its own, so others' jobs are
    /// delayed rather than failed.
    #[test]
    fn a_throttled_lambda_is_retried_on_a_longer_back_off() {
        fn tasks<'a>(node: &'a serde_json::Value, found: &mut Vec<&'a serde_json::Value>) {
            match node {
                serde_json::Value::Object(map) => {
                    let lambda = map.get("Resource").and_then(|r| r.as_str()).is_some_and(|r| r.ends_with("FunctionArn}"));
                    if map.get("Type").and_then(|t| t.as_str()) == Some("Task") && lambda {
                        found.push(node);
                    }
                    map.values().for_each(|value| tasks(value, found));
                }
                serde_json::Value::Array(items) => items.iter().for_each(|value| tasks(value, found)),
                _ => {}
            }
        }
        for definition in [PROVISION_DEFINITION, FLEET_DEFINITION] {
            let definition: serde_json::Value = serde_json::from_str(definition).unwrap();
            let mut found = Vec::new();
            tasks(&definition, &mut found);
            assert!(found.len() >= 4);
            for task in found {
                let retriers = task["Retry"].as_array().expect("every Task retries");
                let throttled = "Lambda.TooManyRequestsException";
                let own: Vec<_> = retriers.iter().filter(|r| r["ErrorEquals"] == serde_json::json!([throttled])).collect();
                assert_eq!(own.len(), 1, "{task}");
                assert!(own[0]["IntervalSeconds"].as_f64() >= Some(5.0) && own[0]["MaxAttempts"].as_u64() >= Some(6), "{task}");
                let shared = retriers.iter().filter(|r| r["ErrorEquals"].as_array().unwrap().iter().any(|e| e == throttled));
                assert_eq!(shared.count(), 1, "only its own retrier names it: {task}");
            }
        }
    }

    #[test]
    fn the_provision_definition_loads() {
        let executor = Executor::provision(0.0);
        let tasks = &executor.machine.tasks;
        assert_eq!(tasks.len(), 9, "every step is a Task: {tasks:?}");
        let steps: std::collections::BTreeSet<_> =
            tasks.values().filter_map(|t| if let Target::Step(step) = t { Some(step.name()) } else { None }).collect();
        assert_eq!(steps, Step::PROVISION.iter().map(|s| s.name()).collect());
    }

    #[test]
    fn the_fleet_definition_loads_with_the_provision_definition_inside() {
        let fleet = Executor::fleet(Arc::new(Executor::provision(0.0)));
        assert_eq!(fleet.task_states(), ["FinishFleet", "SelectInstances"].map(String::from).into());
        let processor = &fleet.machine.maps["Instances"];
        assert!(matches!(processor.tasks["StartJob"], Target::Step(Step::FleetStartJob)));
        assert!(matches!(processor.tasks["Provision"], Target::Execution(_)));
    }

    /// A Map over items whose processor fails the odd ones, as the fleet's fails a failed job.
    fn odd_ones_fail(tolerated: u32) -> String {
        serde_json::json!({
            "StartAt": "Each",
            "States": {
                "Each": {
                    "Type": "Map", "ItemsPath": "$.items", "MaxConcurrencyPath": "$.concurrency",
                    "ToleratedFailurePercentage": tolerated,
                    "ItemSelector": {"kind.$": "$$.Map.Item.Value.kind", "batch.$": "$.batch"},
                    "ItemProcessor": {
                        "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                        "StartAt": "Odd?",
                        "States": {
                            "Odd?": {"Type": "Choice", "Choices": [{"Variable": "$.kind", "StringEquals": "odd", "Next": "No"}], "Default": "Yes"},
                            "Yes": {"Type": "Succeed"},
                            "No": {"Type": "Fail", "Error": "Odd", "Cause": "an odd item"}
                        }
                    },
                    "ResultPath": "$.results",
                    "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Done"}],
                    "Next": "Done"
                },
                "Done": {"Type": "Succeed"}
            }
        })
        .to_string()
    }

    #[tokio::test]
    async fn a_map_runs_each_item_and_fails_past_its_tolerated_failures() {
        let dir = std::env::temp_dir().join(format!("dbroles-asl-{}", uuid::Uuid::new_v4()));
        let store = Arc::new(crate::store::sqlite::SqliteStore::open(&dir.join("s.db")).unwrap());
        let inventory = Arc::new(crate::inventory::local::LocalInventory::new(Vec::new()).unwrap());
        let deps = crate::wiring::local(store, inventory, Default::default());
        let items: Vec<_> = (0..6).map(|i| serde_json::json!({"kind": if i % 2 == 1 { "odd" } else { "even" }})).collect();
        let input = serde_json::json!({"items": items, "concurrency": 2, "batch": "b1"});
        let tolerant = Executor::load(&odd_ones_fail(50), 0.0).unwrap();
        let output = tolerant.execute(&InProcess(deps.clone()), input.clone(), &|_| {}).await.unwrap();
        let results = output["results"].as_array().unwrap();
        assert_eq!(results.len(), 6);
        assert_eq!(
            results[0],
            serde_json::json!({"kind": "even", "batch": "b1"}),
            "ItemSelector filled from the item and the input"
        );
        assert_eq!(results[1]["Error"], "Odd");
        let strict = Executor::load(&odd_ones_fail(10), 0.0).unwrap();
        let output = strict.execute(&InProcess(deps.clone()), input, &|_| {}).await.unwrap();
        assert_eq!(output["error"]["Error"], "States.ExceedToleratedFailureThreshold", "{output}");
        assert!(output.get("results").is_none());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn unsupported_constructs_are_refused_with_a_clear_error() {
        let parallel = r#"{"StartAt": "A", "States": {"A": {"Type": "Parallel", "End": true}}}"#;
        let error = Executor::load(parallel, 1.0).unwrap_err().0;
        assert!(error.contains("States.A") && error.contains("unknown variant `Parallel`"), "{error}");
        let parameters = r#"{"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": "${ResolveFunctionArn}", "Parameters": {}, "End": true}}}"#;
        let error = Executor::load(parameters, 1.0).unwrap_err().0;
        assert!(error.contains("no Parameters"), "{error}");
        let nested = r#"{"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": "arn:aws:states:::states:startExecution.sync:2", "Parameters": {"StateMachineArn": "${OtherArn}"}, "End": true}}}"#;
        assert!(Executor::load(nested, 1.0).unwrap_err().0.contains("names no definition loaded"));
        let processor = r#"{"StartAt": "A", "States": {"A": {"Type": "Map", "ItemProcessor": {"StartAt": "B", "States": {"B": {"Type": "Pass", "Next": "C"}}}, "End": true}}}"#;
        let error = Executor::load(processor, 1.0).unwrap_err().0;
        assert!(error.contains("state A: ItemProcessor: state B: the next state C does not exist"), "{error}");
        let deep = r#"{"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": "${ResolveFunctionArn}", "ResultPath": "$.a.b", "End": true}}}"#;
        assert!(Executor::load(deep, 1.0).unwrap_err().0.contains("$.a.b"));
        let foreign =
            r#"{"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": "arn:aws:states:::sqs:sendMessage", "End": true}}}"#;
        assert!(Executor::load(foreign, 1.0).unwrap_err().0.contains("not a dbroles step"));
        let dangling = r#"{"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "B"}}}"#;
        assert!(Executor::load(dangling, 1.0).unwrap_err().0.contains("B does not exist"));
    }
}
