//! A local executor for Amazon States Language: exactly the constructs
//! `statemachine/provision.asl.json` uses (Task, Choice, Wait, Pass, Succeed,
//! Fail; Retry and Catch; `ResultPath` of `$` or `$.name`; Choice rules with
//! `BooleanEquals` or `StringEquals` on `$.name`). A definition that uses anything
//! else is refused when it is loaded, naming what is not supported.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::deps::Deps;
use crate::steps::{self, CaughtError, Step, StepError};

/// The one definition: SAM deploys this file, and the local CLI runs it.
pub const PROVISION_DEFINITION: &str = include_str!("../../../../statemachine/provision.asl.json");

/// The most transitions one execution may take (a guard against a definition that loops).
const MAX_TRANSITIONS: usize = 1_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct Definition {
    #[serde(default, rename = "Comment")]
    _comment: Option<String>,
    start_at: String,
    states: BTreeMap<String, StateDef>,
    /// The execution fails with `States.Timeout` after this long (not shortened locally).
    #[serde(default)]
    timeout_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "Type")]
enum StateDef {
    Task(Task),
    Choice(Choice),
    Wait(Wait),
    Pass(Pass),
    /// Read only to refuse unknown fields.
    Succeed(#[allow(dead_code)] Succeed),
    Fail(Fail),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct Task {
    #[serde(default, rename = "Comment")]
    _comment: Option<String>,
    resource: String,
    #[serde(default = "whole")]
    result_path: String,
    #[serde(default)]
    retry: Vec<Retrier>,
    #[serde(default)]
    catch: Vec<Catcher>,
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    end: bool,
}

fn whole() -> String {
    "$".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct Retrier {
    error_equals: Vec<String>,
    #[serde(default = "one")]
    interval_seconds: f64,
    #[serde(default = "three")]
    max_attempts: u32,
    #[serde(default = "two")]
    backoff_rate: f64,
}

fn one() -> f64 {
    1.0
}

fn two() -> f64 {
    2.0
}

fn three() -> u32 {
    3
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct Catcher {
    error_equals: Vec<String>,
    #[serde(default = "whole")]
    result_path: String,
    next: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct Choice {
    #[serde(default, rename = "Comment")]
    _comment: Option<String>,
    choices: Vec<ChoiceRule>,
    #[serde(default)]
    default: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct ChoiceRule {
    variable: String,
    #[serde(default)]
    boolean_equals: Option<bool>,
    #[serde(default)]
    string_equals: Option<String>,
    next: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct Wait {
    #[serde(default, rename = "Comment")]
    _comment: Option<String>,
    seconds: u64,
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    end: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct Pass {
    #[serde(default, rename = "Comment")]
    _comment: Option<String>,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default = "whole")]
    result_path: String,
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    end: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct Succeed {
    #[serde(default, rename = "Comment")]
    _comment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct Fail {
    #[serde(default, rename = "Comment")]
    _comment: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    cause: Option<String>,
}

/// What an execution reports as it goes.
#[derive(Debug)]
pub enum Progress<'a> {
    Entered(&'a str),
    Retrying { state: &'a str, error: &'a StepError, after: Duration },
    Caught { state: &'a str, error: &'a StepError },
}

/// A loaded, checked definition whose Tasks all name a step.
#[derive(Debug)]
pub struct Executor {
    definition: Definition,
    tasks: BTreeMap<String, Step>,
    /// Waits are multiplied by this (shortened locally).
    wait_scale: f64,
}

/// A definition this executor cannot run: the message names the construct.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DefinitionError(pub String);

fn refuse<T>(message: String) -> Result<T, DefinitionError> {
    Err(DefinitionError(message))
}

/// `$` or `$.name`: the only paths the executor knows.
fn field_of(path: &str) -> Result<Option<&str>, DefinitionError> {
    match path {
        "$" => Ok(None),
        _ => match path.strip_prefix("$.") {
            Some(name) if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => Ok(Some(name)),
            _ => refuse(format!("the path '{path}' is not supported (only $ and $.name)")),
        },
    }
}

fn transition(name: &str, next: &Option<String>, end: bool) -> Result<(), DefinitionError> {
    match (next, end) {
        (Some(_), false) | (None, true) => Ok(()),
        _ => refuse(format!("state {name}: give exactly one of Next and End")),
    }
}

/// Checks one state of `definition`: its transitions lead to states that exist,
/// its paths are known; a Task's step.
fn check_state(definition: &Definition, name: &str, state: &StateDef) -> Result<Option<Step>, DefinitionError> {
    let known = |next: &str| match definition.states.contains_key(next) {
        true => Ok(()),
        false => refuse(format!("state {name}: the next state {next} does not exist")),
    };
    let known_next = |next: &Option<String>, end: bool| {
        transition(name, next, end)?;
        next.as_deref().map_or(Ok(()), known)
    };
    match state {
        StateDef::Task(task) => {
            known_next(&task.next, task.end)?;
            field_of(&task.result_path)?;
            for catcher in &task.catch {
                known(&catcher.next)?;
                field_of(&catcher.result_path)?;
            }
            let step = Step::from_resource(&task.resource);
            step.map(Some)
                .ok_or_else(|| DefinitionError(format!("state {name}: the resource {} is not a dbroles step", task.resource)))
        }
        StateDef::Choice(choice) => {
            for rule in &choice.choices {
                known(&rule.next)?;
                if field_of(&rule.variable)?.is_none() {
                    return refuse(format!("state {name}: a Choice variable must be $.name"));
                }
                if rule.boolean_equals.is_some() == rule.string_equals.is_some() {
                    return refuse(format!("state {name}: each choice needs one of BooleanEquals and StringEquals"));
                }
            }
            choice.default.as_deref().map_or(Ok(()), known).map(|_| None)
        }
        StateDef::Wait(wait) => known_next(&wait.next, wait.end).map(|_| None),
        StateDef::Pass(pass) => {
            known_next(&pass.next, pass.end)?;
            field_of(&pass.result_path).map(|_| None)
        }
        StateDef::Succeed(_) | StateDef::Fail(_) => Ok(None),
    }
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

impl Executor {
    /// Loads a definition, refusing any construct this executor does not run.
    pub fn load(text: &str, wait_scale: f64) -> Result<Self, DefinitionError> {
        let deserializer = &mut serde_json::Deserializer::from_str(text);
        let definition: Definition = serde_path_to_error::deserialize(deserializer)
            .map_err(|e| DefinitionError(format!("{}: {}", e.path(), e.inner())))?;
        if !definition.states.contains_key(&definition.start_at) {
            return refuse(format!("state StartAt: the next state {} does not exist", definition.start_at));
        }
        let mut tasks = BTreeMap::new();
        for (name, state) in &definition.states {
            if let Some(step) = check_state(&definition, name, state)? {
                tasks.insert(name.clone(), step);
            }
        }
        Ok(Self { definition, tasks, wait_scale })
    }

    /// The provisioning definition, with waits shortened by `wait_scale`.
    pub fn provision(wait_scale: f64) -> Self {
        Self::load(PROVISION_DEFINITION, wait_scale).expect("statemachine/provision.asl.json is checked by the tests")
    }

    /// Runs an execution to its end: the output, or the error it failed with.
    /// The names of the Task states.
    pub fn task_states(&self) -> std::collections::BTreeSet<String> {
        self.tasks.keys().cloned().collect()
    }

    pub async fn execute(
        &self,
        deps: &Deps,
        input: Value,
        progress: &(dyn Fn(Progress<'_>) + Send + Sync),
    ) -> Result<Value, CaughtError> {
        let Some(seconds) = self.definition.timeout_seconds else { return self.run(deps, input, progress).await };
        tokio::time::timeout(Duration::from_secs(seconds), self.run(deps, input, progress)).await.unwrap_or_else(|_| {
            Err(CaughtError { error: "States.Timeout".into(), cause: format!("the execution ran longer than {seconds} s") })
        })
    }

    async fn run(
        &self,
        deps: &Deps,
        input: Value,
        progress: &(dyn Fn(Progress<'_>) + Send + Sync),
    ) -> Result<Value, CaughtError> {
        let mut data = input;
        let mut current = self.definition.start_at.clone();
        for _ in 0..MAX_TRANSITIONS {
            progress(Progress::Entered(&current));
            match self.run_state(&current, deps, &mut data, progress).await? {
                Some(next) => current = next,
                None => return Ok(data),
            }
        }
        Err(CaughtError { error: "States.Runtime".into(), cause: format!("more than {MAX_TRANSITIONS} transitions") })
    }

    /// Runs one state on `data`: the next state, or `None` at the end.
    async fn run_state(
        &self,
        current: &str,
        deps: &Deps,
        data: &mut Value,
        progress: &(dyn Fn(Progress<'_>) + Send + Sync),
    ) -> Result<Option<String>, CaughtError> {
        match &self.definition.states[current] {
            StateDef::Task(task) => match self.run_task(current, task, deps, data, progress).await {
                Ok(result) => {
                    put(data, &task.result_path, result);
                    Ok(task.next.clone())
                }
                Err(error) => {
                    let caught = CaughtError { error: error.error_type.as_str().to_string(), cause: error.payload().to_string() };
                    let catcher = task.catch.iter().find(|c| matches(&c.error_equals, &caught.error));
                    let Some(catcher) = catcher else { return Err(caught) };
                    progress(Progress::Caught { state: current, error: &error });
                    put(data, &catcher.result_path, serde_json::to_value(&caught).expect("an error serialises"));
                    Ok(Some(catcher.next.clone()))
                }
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

    async fn run_task(
        &self,
        name: &str,
        task: &Task,
        deps: &Deps,
        data: &Value,
        progress: &(dyn Fn(Progress<'_>) + Send + Sync),
    ) -> Result<Value, StepError> {
        let step = self.tasks[name];
        let mut attempts = vec![0u32; task.retry.len()];
        loop {
            let error = match steps::run(step, deps, data.clone()).await {
                Ok(result) => return Ok(result),
                Err(error) => error,
            };
            let type_name = error.error_type.as_str();
            let Some(index) = task.retry.iter().position(|r| matches(&r.error_equals, type_name)) else { return Err(error) };
            let retrier = &task.retry[index];
            if attempts[index] >= retrier.max_attempts {
                return Err(error);
            }
            let after = retrier.interval_seconds * retrier.backoff_rate.powi(attempts[index] as i32) * self.wait_scale;
            let after = Duration::from_secs_f64(after);
            attempts[index] += 1;
            progress(Progress::Retrying { state: name, error: &error, after });
            tokio::time::sleep(after).await;
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provision_definition_loads() {
        let executor = Executor::provision(0.0);
        assert_eq!(executor.tasks.len(), 9, "every step is a Task: {:?}", executor.tasks);
        let steps: std::collections::BTreeSet<_> = executor.tasks.values().map(|s| s.name()).collect();
        assert_eq!(steps.len(), Step::ALL.len());
    }

    #[test]
    fn unsupported_constructs_are_refused_with_a_clear_error() {
        let map = r#"{"StartAt": "A", "States": {"A": {"Type": "Map", "End": true}}}"#;
        let error = Executor::load(map, 1.0).unwrap_err().0;
        assert!(error.contains("States.A") && error.contains("unknown variant `Map`"), "{error}");
        let parameters = r#"{"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": "${ResolveFunctionArn}", "Parameters": {}, "End": true}}}"#;
        let error = Executor::load(parameters, 1.0).unwrap_err().0;
        assert!(error.contains("unknown field `Parameters`"), "{error}");
        let deep = r#"{"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": "${ResolveFunctionArn}", "ResultPath": "$.a.b", "End": true}}}"#;
        assert!(Executor::load(deep, 1.0).unwrap_err().0.contains("$.a.b"));
        let foreign =
            r#"{"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": "arn:aws:states:::sqs:sendMessage", "End": true}}}"#;
        assert!(Executor::load(foreign, 1.0).unwrap_err().0.contains("not a dbroles step"));
        let dangling = r#"{"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "B"}}}"#;
        assert!(Executor::load(dangling, 1.0).unwrap_err().0.contains("B does not exist"));
    }
}
