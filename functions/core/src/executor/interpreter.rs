//! Running a loaded definition: states, Retry and Catch, Maps, and child
//! executions. Tasks run through [`Tasks`], which the in-process executor
//! implements with the steps; the interpreter knows no dependency.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::definition::{field_of, read_path, Catcher, Choice, Executor, Machine, Map, StateDef, Target, Task};
use crate::steps::{CaughtError, Step, StepError};

/// The most transitions one execution may take (a guard against a definition that loops).
const MAX_TRANSITIONS: usize = 1_000;

/// What an execution reports as it goes.
#[derive(Debug)]
pub enum Progress<'a> {
    Entered(&'a str),
    Retrying { state: &'a str, error: &'a StepError, after: Duration },
    Caught { state: &'a str, error: &'a StepError },
}

/// What runs a definition's Tasks.
#[async_trait]
pub trait Tasks: Send + Sync {
    /// Runs the step a Task names on its input.
    async fn run(&self, step: Step, input: Value) -> Result<Value, StepError>;
    /// A child execution (a Map item's `startExecution.sync`) failed with
    /// `message`: what the status-change rule does on AWS.
    async fn execution_failed(&self, input: &Value, message: &str);
}

/// A Parameters or ItemSelector template filled from the input and the context object.
fn fill(template: &Value, data: &Value, context: &Value) -> Result<Value, CaughtError> {
    Ok(match template {
        Value::Object(fields) => {
            let mut filled = serde_json::Map::new();
            for (key, value) in fields {
                match (key.strip_suffix(".$"), value) {
                    (Some(key), Value::String(path)) => {
                        let found = read_path(path, data, context).ok_or_else(|| CaughtError {
                            error: "States.Runtime".into(),
                            cause: format!("the path '{path}' matched nothing in the input"),
                        })?;
                        filled.insert(key.to_string(), found.clone());
                    }
                    _ => {
                        filled.insert(key.clone(), fill(value, data, context)?);
                    }
                }
            }
            Value::Object(filled)
        }
        Value::Array(items) => Value::Array(items.iter().map(|item| fill(item, data, context)).collect::<Result<_, _>>()?),
        other => other.clone(),
    })
}

/// The next state of a Choice, or `States.NoChoiceMatched`.
fn choose(name: &str, choice: &Choice, data: &Value) -> Result<String, CaughtError> {
    let chosen = choice.choices.iter().find(|rule| {
        let value = field_of(&rule.variable).ok().flatten().and_then(|f| data.get(f));
        match (&rule.boolean_equals, &rule.string_equals) {
            (Some(expected), _) => value.and_then(Value::as_bool) == Some(*expected),
            (_, Some(expected)) => value.and_then(Value::as_str) == Some(expected.as_str()),
            _ => false,
        }
    });
    chosen
        .map(|rule| rule.next.clone())
        .or_else(|| choice.default.clone())
        .ok_or_else(|| CaughtError { error: "States.NoChoiceMatched".into(), cause: format!("no choice of {name} matched") })
}

/// A Task's failure: a step's (retried by type), or a nested execution's.
enum TaskError {
    Step(StepError),
    Caught(CaughtError),
}

impl TaskError {
    fn caught(&self) -> CaughtError {
        match self {
            TaskError::Step(error) => {
                CaughtError { error: error.error_type.as_str().to_string(), cause: error.payload().to_string() }
            }
            TaskError::Caught(caught) => caught.clone(),
        }
    }
}

type Report<'a> = &'a (dyn Fn(Progress<'_>) + Send + Sync);

impl Executor {
    /// Runs an execution to its end: the output, or the error it failed with.
    pub async fn execute(&self, tasks: &dyn Tasks, input: Value, progress: Report<'_>) -> Result<Value, CaughtError> {
        let run = self.run(&self.machine, tasks, input, &Value::Null, progress);
        let Some(seconds) = self.timeout_seconds else { return run.await };
        tokio::time::timeout(Duration::from_secs(seconds), run).await.unwrap_or_else(|_| {
            Err(CaughtError { error: "States.Timeout".into(), cause: format!("the execution ran longer than {seconds} s") })
        })
    }

    /// A child execution started by a Task (a fleet's Map): its output, or its
    /// error once `tasks` has been told, as the status-change rule does on AWS.
    async fn run_child(&self, tasks: &dyn Tasks, input: Value, progress: Report<'_>) -> Result<Value, CaughtError> {
        let output = self.execute(tasks, input.clone(), progress).await;
        if let Err(error) = &output {
            tasks.execution_failed(&input, &format!("the execution failed: {}", error.message())).await;
        }
        output
    }

    fn run<'a>(
        &'a self,
        machine: &'a Machine,
        tasks: &'a dyn Tasks,
        input: Value,
        context: &'a Value,
        progress: Report<'a>,
    ) -> futures::future::BoxFuture<'a, Result<Value, CaughtError>> {
        Box::pin(async move {
            let mut data = input;
            let mut current = machine.start_at.clone();
            for _ in 0..MAX_TRANSITIONS {
                progress(Progress::Entered(&current));
                match self.run_state(machine, &current, tasks, &mut data, context, progress).await? {
                    Some(next) => current = next,
                    None => return Ok(data),
                }
            }
            Err(CaughtError { error: "States.Runtime".into(), cause: format!("more than {MAX_TRANSITIONS} transitions") })
        })
    }

    /// Runs one state on `data`: the next state, or `None` at the end.
    async fn run_state(
        &self,
        machine: &Machine,
        current: &str,
        tasks: &dyn Tasks,
        data: &mut Value,
        context: &Value,
        progress: Report<'_>,
    ) -> Result<Option<String>, CaughtError> {
        match &machine.states[current] {
            StateDef::Task(task) => {
                match self.run_task(current, task, &machine.tasks[current], tasks, data, context, progress).await {
                    Ok(result) => {
                        put(data, &task.result_path, result);
                        if let Some(path) = &task.output_path {
                            *data = read_path(path, data, context).cloned().unwrap_or(Value::Null);
                        }
                        Ok(task.next.clone())
                    }
                    Err(error) => catch(current, &task.catch, error, data, progress),
                }
            }
            StateDef::Map(map) => match self.run_map(current, map, &machine.maps[current], tasks, data, progress).await {
                Ok(results) => {
                    if let Some(path) = &map.result_path {
                        put(data, path, results);
                    }
                    Ok(map.next.clone())
                }
                Err(error) => catch(current, &map.catch, TaskError::Caught(error), data, progress),
            },
            StateDef::Choice(choice) => choose(current, choice, data).map(Some),
            StateDef::Wait(wait) => {
                tokio::time::sleep(Duration::from_secs_f64(wait.seconds as f64 * self.wait_scale)).await;
                Ok(wait.next.clone())
            }
            StateDef::Pass(pass) => {
                if let Some(result) = &pass.result {
                    put(data, &pass.result_path, result.clone());
                }
                Ok(pass.next.clone())
            }
            StateDef::Succeed(_) => Ok(None),
            StateDef::Fail(fail) => Err(CaughtError {
                error: fail.error.clone().unwrap_or_else(|| "States.Fail".into()),
                cause: fail.cause.clone().unwrap_or_default(),
            }),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_task(
        &self,
        name: &str,
        task: &Task,
        target: &Target,
        tasks: &dyn Tasks,
        data: &Value,
        context: &Value,
        progress: Report<'_>,
    ) -> Result<Value, TaskError> {
        let input = match &task.parameters {
            Some(parameters) => fill(parameters, data, context).map_err(TaskError::Caught)?,
            None => data.clone(),
        };
        let step = match target {
            Target::Step(step) => *step,
            Target::Execution(executor) => {
                let name = input.get("Name").cloned().unwrap_or(Value::Null);
                let input = input.get("Input").cloned().unwrap_or(Value::Null);
                let output = executor.run_child(tasks, input, progress).await.map_err(|failed| {
                    TaskError::Caught(CaughtError { error: "States.TaskFailed".into(), cause: failed.message() })
                })?;
                return Ok(serde_json::json!({"Output": output, "Status": "SUCCEEDED", "Name": name}));
            }
        };
        let mut attempts = vec![0u32; task.retry.len()];
        loop {
            let error = match tasks.run(step, input.clone()).await {
                Ok(result) => return Ok(result),
                Err(error) => error,
            };
            let type_name = error.error_type.as_str();
            let Some(index) = task.retry.iter().position(|r| matches(&r.error_equals, type_name)) else {
                return Err(TaskError::Step(error));
            };
            let retrier = &task.retry[index];
            if attempts[index] >= retrier.max_attempts {
                return Err(TaskError::Step(error));
            }
            let after = retrier.interval_seconds * retrier.backoff_rate.powi(attempts[index] as i32) * self.wait_scale;
            let after = Duration::from_secs_f64(after);
            attempts[index] += 1;
            progress(Progress::Retrying { state: name, error: &error, after });
            tokio::time::sleep(after).await;
        }
    }

    /// Runs the item processor once per item, at most `MaxConcurrency` at once.
    /// Once more items have failed than `ToleratedFailurePercentage` allows, no
    /// further item starts (those running finish) and the Map fails with
    /// `States.ExceedToleratedFailureThreshold`. The output: each item's, in order.
    async fn run_map(
        &self,
        name: &str,
        map: &Map,
        processor: &Machine,
        tasks: &dyn Tasks,
        data: &Value,
        progress: Report<'_>,
    ) -> Result<Value, CaughtError> {
        use futures::StreamExt;
        let (items, concurrency, tolerated) = map_bounds(name, map, data)?;
        let total = items.len();
        let failed = std::sync::atomic::AtomicUsize::new(0);
        let exceeded = || failed.load(std::sync::atomic::Ordering::SeqCst) as f64 * 100.0 > tolerated * total as f64;
        let runs: Vec<_> = items
            .into_iter()
            .enumerate()
            .map(|(index, item)| {
                let (failed, exceeded) = (&failed, &exceeded);
                async move {
                    if exceeded() {
                        return None;
                    }
                    let context = serde_json::json!({"Map": {"Item": {"Index": index, "Value": item}}});
                    let input = match &map.item_selector {
                        Some(selector) => fill(selector, data, &context),
                        None => Ok(item),
                    };
                    let output = match input {
                        Ok(input) => self.run(processor, tasks, input, &context, progress).await,
                        Err(error) => Err(error),
                    };
                    if output.is_err() {
                        failed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Some(output.unwrap_or_else(|error| serde_json::to_value(error).expect("an error serialises")))
                }
            })
            .collect();
        let limit = if concurrency == 0 { total.max(1) } else { concurrency };
        let outputs: Vec<Option<Value>> = futures::stream::iter(runs).buffered(limit).collect().await;
        if exceeded() {
            let failed = failed.load(std::sync::atomic::Ordering::SeqCst);
            return Err(CaughtError {
                error: "States.ExceedToleratedFailureThreshold".into(),
                cause: format!("state {name}: {failed} of {total} items failed, more than {tolerated}% tolerated"),
            });
        }
        Ok(Value::Array(outputs.into_iter().flatten().collect()))
    }
}

/// A Map's items, its `MaxConcurrency` (0: all at once) and its `ToleratedFailurePercentage`, read from `data`.
fn map_bounds(name: &str, map: &Map, data: &Value) -> Result<(Vec<Value>, usize, f64), CaughtError> {
    let runtime = |cause: String| CaughtError { error: "States.Runtime".into(), cause: format!("state {name}: {cause}") };
    let items = read_path(&map.items_path, data, &Value::Null)
        .and_then(Value::as_array)
        .cloned()
        .ok_or_else(|| runtime(format!("{} is not an array", map.items_path)))?;
    let number = |fixed: Option<f64>, path: &Option<String>| match path {
        Some(path) => read_path(path, data, &Value::Null)
            .and_then(Value::as_f64)
            .map(Some)
            .ok_or_else(|| runtime(format!("{path} is not a number"))),
        None => Ok(fixed),
    };
    let concurrency = number(map.max_concurrency.map(|n| n as f64), &map.max_concurrency_path)?.unwrap_or(0.0) as usize;
    let tolerated = number(map.tolerated_failure_percentage, &map.tolerated_failure_percentage_path)?.unwrap_or(0.0);
    Ok((items, concurrency, tolerated))
}

/// A failed Task or Map: the catcher's next state (the error put where it says), or the error.
fn catch(
    current: &str,
    catchers: &[Catcher],
    error: TaskError,
    data: &mut Value,
    progress: Report<'_>,
) -> Result<Option<String>, CaughtError> {
    let caught = error.caught();
    let Some(catcher) = catchers.iter().find(|c| matches(&c.error_equals, &caught.error)) else { return Err(caught) };
    if let TaskError::Step(error) = &error {
        progress(Progress::Caught { state: current, error });
    }
    put(data, &catcher.result_path, serde_json::to_value(&caught).expect("an error serialises"));
    Ok(Some(catcher.next.clone()))
}

fn matches(error_equals: &[String], error: &str) -> bool {
    error_equals.iter().any(|e| e == error || e == "States.ALL")
}

fn put(data: &mut Value, path: &str, value: Value) {
    match field_of(path).ok().flatten() {
        None => *data = value,
        Some(field) => {
            if !data.is_object() {
                *data = Value::Object(Default::default());
            }
            data[field] = value;
        }
    }
}
