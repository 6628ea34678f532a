//! A local executor for Amazon States Language: exactly the constructs
//! `statemachine/provision.asl.json` and `statemachine/fleet.asl.json` use (Task,
//! Choice, Wait, Pass, Succeed, Fail, Map; Retry and Catch; `ResultPath` of `$`
//! or `$.name`; Choice rules with `BooleanEquals` or `StringEquals` on `$.name`;
//! a Map's `ItemsPath`, `ItemSelector`, `MaxConcurrency(Path)` and
//! `ToleratedFailurePercentage(Path)`; a Task's `Parameters` and `OutputPath`, and
//! `arn:aws:states:::states:startExecution.sync:2`, which runs another loaded
//! definition in process). A definition that uses anything else is refused when
//! it is loaded, naming what is not supported.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::deps::Deps;
use crate::steps::{self, CaughtError, Step, StepError};

/// The one definition of a job: SAM deploys this file, and the local CLI runs it.
pub const PROVISION_DEFINITION: &str = include_str!("../../../../statemachine/provision.asl.json");
/// The one definition of a fleet job: each of its Map's items runs [`PROVISION_DEFINITION`].
pub const FLEET_DEFINITION: &str = include_str!("../../../../statemachine/fleet.asl.json");

/// The Task resource that starts another state machine and waits for its output.
const START_EXECUTION: &str = "arn:aws:states:::states:startExecution.sync:2";
/// How the fleet definition names the provisioning state machine.
const PROVISION_MACHINE: &str = "${ProvisionStateMachineArn}";

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
    Map(Map),
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
    /// The input the resource gets, built from the state's input (`"name.$": "$.path"`).
    #[serde(default)]
    parameters: Option<Value>,
    #[serde(default = "whole")]
    result_path: String,
    /// The part of the state's output passed on (`$.name`).
    #[serde(default)]
    output_path: Option<String>,
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

fn whole_or_none() -> Option<String> {
    Some(whole())
}

/// `ResultPath: null` discards the result; absent keeps all of it.
fn nullable_path<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(deserializer)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct Map {
    #[serde(default, rename = "Comment")]
    _comment: Option<String>,
    #[serde(default = "whole")]
    items_path: String,
    #[serde(default)]
    item_selector: Option<Value>,
    #[serde(default)]
    max_concurrency: Option<u64>,
    #[serde(default)]
    max_concurrency_path: Option<String>,
    #[serde(default)]
    tolerated_failure_percentage: Option<f64>,
    #[serde(default)]
    tolerated_failure_percentage_path: Option<String>,
    item_processor: Processor,
    #[serde(default = "whole_or_none", deserialize_with = "nullable_path")]
    result_path: Option<String>,
    #[serde(default)]
    catch: Vec<Catcher>,
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    end: bool,
}

/// A Map's item processor: a state machine of its own, run once per item.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct Processor {
    /// Inline or distributed: in process, both run the same way.
    #[serde(default, rename = "ProcessorConfig")]
    _processor_config: Option<Value>,
    start_at: String,
    states: BTreeMap<String, StateDef>,
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

/// What a Task runs: a dbroles step, or another loaded definition.
#[derive(Debug, Clone)]
enum Target {
    Step(Step),
    Execution(Arc<Executor>),
}

/// A checked set of states: a definition's, or a Map's item processor's.
#[derive(Debug)]
struct Machine {
    start_at: String,
    states: BTreeMap<String, StateDef>,
    tasks: BTreeMap<String, Target>,
    /// Each Map state's item processor.
    maps: BTreeMap<String, Machine>,
}

/// A loaded, checked definition whose Tasks all name a step or a known definition.
#[derive(Debug)]
pub struct Executor {
    machine: Machine,
    timeout_seconds: Option<u64>,
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

/// `$` or `$.name`: the only paths a result is written to, or a choice reads.
fn field_of(path: &str) -> Result<Option<&str>, DefinitionError> {
    match path {
        "$" => Ok(None),
        _ => match path.strip_prefix("$.") {
            Some(name) if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => Ok(Some(name)),
            _ => refuse(format!("the path '{path}' is not supported (only $ and $.name)")),
        },
    }
}

/// A path read from the input (`$`, `$.a.b`) or from the context object (`$$.Map.Item.Value`).
fn read_path<'a>(path: &str, data: &'a Value, context: &'a Value) -> Option<&'a Value> {
    let (root, rest) = match path.strip_prefix("$$") {
        Some(rest) => (context, rest),
        None => (data, path.strip_prefix('$')?),
    };
    let mut value = root;
    for field in rest.split('.').skip(1) {
        value = value.get(field)?;
    }
    Some(value)
}

fn check_path(name: &str, path: &str) -> Result<(), DefinitionError> {
    let rest = path.strip_prefix("$$").or_else(|| path.strip_prefix('$'));
    let fields_ok = |rest: &str| {
        rest.is_empty()
            || rest.strip_prefix('.').is_some_and(|fields| {
                fields.split('.').all(|f| !f.is_empty() && f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            })
    };
    match rest {
        Some(rest) if fields_ok(rest) => Ok(()),
        _ => refuse(format!("state {name}: the path '{path}' is not supported (only $, $.a.b and $$.a.b)")),
    }
}

/// Every `"name.$"` path of a Parameters or ItemSelector template.
fn check_template(name: &str, template: &Value) -> Result<(), DefinitionError> {
    match template {
        Value::Object(fields) => fields.iter().try_for_each(|(key, value)| match (key.ends_with(".$"), value) {
            (true, Value::String(path)) => check_path(name, path),
            (true, _) => refuse(format!("state {name}: {key} must be a path")),
            (false, value) => check_template(name, value),
        }),
        Value::Array(items) => items.iter().try_for_each(|item| check_template(name, item)),
        _ => Ok(()),
    }
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

fn transition(name: &str, next: &Option<String>, end: bool) -> Result<(), DefinitionError> {
    match (next, end) {
        (Some(_), false) | (None, true) => Ok(()),
        _ => refuse(format!("state {name}: give exactly one of Next and End")),
    }
}

/// The definitions a `startExecution` Task may name, by how the definition names them.
pub type Machines = BTreeMap<String, Arc<Executor>>;

impl Machine {
    /// Checks every state (recursively into Map item processors): transitions lead
    /// to states that exist, paths are known, Tasks run a step or a known definition.
    fn build(start_at: String, mut states: BTreeMap<String, StateDef>, machines: &Machines) -> Result<Self, DefinitionError> {
        if !states.contains_key(&start_at) {
            return refuse(format!("state StartAt: the next state {start_at} does not exist"));
        }
        let mut maps = BTreeMap::new();
        for (name, state) in states.iter_mut() {
            if let StateDef::Map(map) = state {
                let processor = std::mem::replace(
                    &mut map.item_processor,
                    Processor { _processor_config: None, start_at: String::new(), states: BTreeMap::new() },
                );
                let machine = Machine::build(processor.start_at, processor.states, machines)
                    .map_err(|e| DefinitionError(format!("state {name}: ItemProcessor: {}", e.0)))?;
                maps.insert(name.clone(), machine);
            }
        }
        let mut machine = Self { start_at, states, tasks: BTreeMap::new(), maps };
        let mut tasks = BTreeMap::new();
        for (name, state) in &machine.states {
            if let Some(target) = machine.check_state(name, state, machines)? {
                tasks.insert(name.clone(), target);
            }
        }
        machine.tasks = tasks;
        Ok(machine)
    }

    fn check_state(&self, name: &str, state: &StateDef, machines: &Machines) -> Result<Option<Target>, DefinitionError> {
        let known = |next: &str| match self.states.contains_key(next) {
            true => Ok(()),
            false => refuse(format!("state {name}: the next state {next} does not exist")),
        };
        let known_next = |next: &Option<String>, end: bool| {
            transition(name, next, end)?;
            next.as_deref().map_or(Ok(()), known)
        };
        let catches = |catch: &[Catcher]| {
            catch.iter().try_for_each(|catcher| {
                known(&catcher.next)?;
                field_of(&catcher.result_path).map(|_| ())
            })
        };
        match state {
            StateDef::Task(task) => {
                known_next(&task.next, task.end)?;
                field_of(&task.result_path)?;
                catches(&task.catch)?;
                if let Some(path) = &task.output_path {
                    field_of(path)?;
                }
                if let Some(parameters) = &task.parameters {
                    check_template(name, parameters)?;
                }
                self.target(name, task, machines).map(Some)
            }
            StateDef::Map(map) => {
                known_next(&map.next, map.end)?;
                catches(&map.catch)?;
                check_path(name, &map.items_path)?;
                for path in [&map.max_concurrency_path, &map.tolerated_failure_percentage_path].into_iter().flatten() {
                    check_path(name, path)?;
                }
                if let Some(path) = &map.result_path {
                    field_of(path)?;
                }
                if let Some(selector) = &map.item_selector {
                    check_template(name, selector)?;
                }
                Ok(None)
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

    /// A Task's step (`${...FunctionArn}` or a function's name), or the known
    /// definition a `startExecution.sync:2` names in its `StateMachineArn`.
    fn target(&self, name: &str, task: &Task, machines: &Machines) -> Result<Target, DefinitionError> {
        if task.resource != START_EXECUTION {
            if task.parameters.is_some() {
                return refuse(format!("state {name}: a step takes the state as it is, with no Parameters"));
            }
            return Step::from_resource(&task.resource)
                .map(Target::Step)
                .ok_or_else(|| DefinitionError(format!("state {name}: the resource {} is not a dbroles step", task.resource)));
        }
        if !task.retry.is_empty() {
            return refuse(format!("state {name}: a nested execution is not retried here; catch its failure instead"));
        }
        let machine = task.parameters.as_ref().and_then(|p| p.get("StateMachineArn")).and_then(Value::as_str);
        match machine.and_then(|arn| machines.get(arn)) {
            Some(executor) => Ok(Target::Execution(executor.clone())),
            None => refuse(format!("state {name}: Parameters.StateMachineArn names no definition loaded beside this one")),
        }
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

type Reporter<'a> = &'a (dyn Fn(Progress<'_>) + Send + Sync);

impl Executor {
    /// Loads a definition, refusing any construct this executor does not run;
    /// a `startExecution.sync:2` Task may name one of `machines`.
    pub fn load_with(text: &str, wait_scale: f64, machines: &Machines) -> Result<Self, DefinitionError> {
        let deserializer = &mut serde_json::Deserializer::from_str(text);
        let definition: Definition = serde_path_to_error::deserialize(deserializer)
            .map_err(|e| DefinitionError(format!("{}: {}", e.path(), e.inner())))?;
        let machine = Machine::build(definition.start_at, definition.states, machines)?;
        Ok(Self { machine, timeout_seconds: definition.timeout_seconds, wait_scale })
    }

    /// Loads a definition whose Tasks all run steps.
    pub fn load(text: &str, wait_scale: f64) -> Result<Self, DefinitionError> {
        Self::load_with(text, wait_scale, &Machines::new())
    }

    /// The provisioning definition, with waits shortened by `wait_scale`.
    pub fn provision(wait_scale: f64) -> Self {
        Self::load(PROVISION_DEFINITION, wait_scale).expect("statemachine/provision.asl.json is checked by the tests")
    }

    /// The fleet definition, each of its Map's items carried out by `provision`.
    pub fn fleet(provision: Arc<Executor>) -> Self {
        let wait_scale = provision.wait_scale;
        let machines = Machines::from([(PROVISION_MACHINE.to_string(), provision)]);
        Self::load_with(FLEET_DEFINITION, wait_scale, &machines).expect("statemachine/fleet.asl.json is checked by the tests")
    }

    /// The names of the Task states (of the top level).
    pub fn task_states(&self) -> std::collections::BTreeSet<String> {
        self.machine.tasks.keys().cloned().collect()
    }

    /// Runs an execution to its end: the output, or the error it failed with.
    pub async fn execute(&self, deps: &Deps, input: Value, progress: Reporter<'_>) -> Result<Value, CaughtError> {
        let run = self.run(&self.machine, deps, input, &Value::Null, progress);
        let Some(seconds) = self.timeout_seconds else { return run.await };
        tokio::time::timeout(Duration::from_secs(seconds), run).await.unwrap_or_else(|_| {
            Err(CaughtError { error: "States.Timeout".into(), cause: format!("the execution ran longer than {seconds} s") })
        })
    }

    fn run<'a>(
        &'a self,
        machine: &'a Machine,
        deps: &'a Deps,
        input: Value,
        context: &'a Value,
        progress: Reporter<'a>,
    ) -> futures::future::BoxFuture<'a, Result<Value, CaughtError>> {
        Box::pin(async move {
            let mut data = input;
            let mut current = machine.start_at.clone();
            for _ in 0..MAX_TRANSITIONS {
                progress(Progress::Entered(&current));
                match self.run_state(machine, &current, deps, &mut data, context, progress).await? {
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
        deps: &Deps,
        data: &mut Value,
        context: &Value,
        progress: Reporter<'_>,
    ) -> Result<Option<String>, CaughtError> {
        match &machine.states[current] {
            StateDef::Task(task) => {
                match self.run_task(current, task, &machine.tasks[current], deps, data, context, progress).await {
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
            StateDef::Map(map) => match self.run_map(current, map, &machine.maps[current], deps, data, progress).await {
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
        deps: &Deps,
        data: &Value,
        context: &Value,
        progress: Reporter<'_>,
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
                let output = super::run_execution(executor, deps, input, progress).await.map_err(|failed| {
                    TaskError::Caught(CaughtError { error: "States.TaskFailed".into(), cause: failed.message() })
                })?;
                return Ok(serde_json::json!({"Output": output, "Status": "SUCCEEDED", "Name": name}));
            }
        };
        let mut attempts = vec![0u32; task.retry.len()];
        loop {
            let error = match steps::run(step, deps, input.clone()).await {
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
        deps: &Deps,
        data: &Value,
        progress: Reporter<'_>,
    ) -> Result<Value, CaughtError> {
        use futures::StreamExt;
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
                        Ok(input) => self.run(processor, deps, input, &context, progress).await,
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

/// A failed Task or Map: the catcher's next state (the error put where it says), or the error.
fn catch(
    current: &str,
    catchers: &[Catcher],
    error: TaskError,
    data: &mut Value,
    progress: Reporter<'_>,
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

#[cfg(test)]
mod tests {
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
        let output = tolerant.execute(&deps, input.clone(), &|_| {}).await.unwrap();
        let results = output["results"].as_array().unwrap();
        assert_eq!(results.len(), 6);
        assert_eq!(
            results[0],
            serde_json::json!({"kind": "even", "batch": "b1"}),
            "ItemSelector filled from the item and the input"
        );
        assert_eq!(results[1]["Error"], "Odd");
        let strict = Executor::load(&odd_ones_fail(10), 0.0).unwrap();
        let output = strict.execute(&deps, input, &|_| {}).await.unwrap();
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
