//! The definition types: the states of Amazon States Language that dbroles'
//! definitions use, as they are read, and the paths they name. Loading and
//! checking them is [`super::checks`]; running them, [`super::interpreter`].

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::steps::Step;

/// The one definition of a job: SAM deploys this file, and the local CLI runs it.
pub const PROVISION_DEFINITION: &str = include_str!("../../../../statemachine/provision.asl.json");
/// The one definition of a fleet job: each of its Map's items runs [`PROVISION_DEFINITION`].
pub const FLEET_DEFINITION: &str = include_str!("../../../../statemachine/fleet.asl.json");

/// The Task resource that starts another state machine and waits for its output.
pub(super) const START_EXECUTION: &str = "arn:aws:states:::states:startExecution.sync:2";
/// How the fleet definition names the provisioning state machine.
pub(super) const PROVISION_MACHINE: &str = "${ProvisionStateMachineArn}";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub(super) struct Definition {
    #[serde(default, rename = "Comment")]
    pub(super) _comment: Option<String>,
    pub(super) start_at: String,
    pub(super) states: BTreeMap<String, StateDef>,
    /// The execution fails with `States.Timeout` after this long (not shortened locally).
    #[serde(default)]
    pub(super) timeout_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "Type")]
pub(super) enum StateDef {
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
pub(super) struct Task {
    #[serde(default, rename = "Comment")]
    pub(super) _comment: Option<String>,
    pub(super) resource: String,
    /// The input the resource gets, built from the state's input (`"name.$": "$.path"`).
    #[serde(default)]
    pub(super) parameters: Option<Value>,
    #[serde(default = "whole")]
    pub(super) result_path: String,
    /// The part of the state's output passed on (`$.name`).
    #[serde(default)]
    pub(super) output_path: Option<String>,
    #[serde(default)]
    pub(super) retry: Vec<Retrier>,
    #[serde(default)]
    pub(super) catch: Vec<Catcher>,
    #[serde(default)]
    pub(super) next: Option<String>,
    #[serde(default)]
    pub(super) end: bool,
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
pub(super) struct Map {
    #[serde(default, rename = "Comment")]
    pub(super) _comment: Option<String>,
    #[serde(default = "whole")]
    pub(super) items_path: String,
    #[serde(default)]
    pub(super) item_selector: Option<Value>,
    #[serde(default)]
    pub(super) max_concurrency: Option<u64>,
    #[serde(default)]
    pub(super) max_concurrency_path: Option<String>,
    #[serde(default)]
    pub(super) tolerated_failure_percentage: Option<f64>,
    #[serde(default)]
    pub(super) tolerated_failure_percentage_path: Option<String>,
    pub(super) item_processor: Processor,
    #[serde(default = "whole_or_none", deserialize_with = "nullable_path")]
    pub(super) result_path: Option<String>,
    #[serde(default)]
    pub(super) catch: Vec<Catcher>,
    #[serde(default)]
    pub(super) next: Option<String>,
    #[serde(default)]
    pub(super) end: bool,
}

/// A Map's item processor: a state machine of its own, run once per item.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub(super) struct Processor {
    /// Inline or distributed: in process, both run the same way.
    #[serde(default, rename = "ProcessorConfig")]
    pub(super) _processor_config: Option<Value>,
    pub(super) start_at: String,
    pub(super) states: BTreeMap<String, StateDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub(super) struct Retrier {
    pub(super) error_equals: Vec<String>,
    #[serde(default = "one")]
    pub(super) interval_seconds: f64,
    #[serde(default = "three")]
    pub(super) max_attempts: u32,
    #[serde(default = "two")]
    pub(super) backoff_rate: f64,
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
pub(super) struct Catcher {
    pub(super) error_equals: Vec<String>,
    #[serde(default = "whole")]
    pub(super) result_path: String,
    pub(super) next: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub(super) struct Choice {
    #[serde(default, rename = "Comment")]
    pub(super) _comment: Option<String>,
    pub(super) choices: Vec<ChoiceRule>,
    #[serde(default)]
    pub(super) default: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub(super) struct ChoiceRule {
    pub(super) variable: String,
    #[serde(default)]
    pub(super) boolean_equals: Option<bool>,
    #[serde(default)]
    pub(super) string_equals: Option<String>,
    pub(super) next: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub(super) struct Wait {
    #[serde(default, rename = "Comment")]
    pub(super) _comment: Option<String>,
    pub(super) seconds: u64,
    #[serde(default)]
    pub(super) next: Option<String>,
    #[serde(default)]
    pub(super) end: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub(super) struct Pass {
    #[serde(default, rename = "Comment")]
    pub(super) _comment: Option<String>,
    #[serde(default)]
    pub(super) result: Option<Value>,
    #[serde(default = "whole")]
    pub(super) result_path: String,
    #[serde(default)]
    pub(super) next: Option<String>,
    #[serde(default)]
    pub(super) end: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub(super) struct Succeed {
    #[serde(default, rename = "Comment")]
    pub(super) _comment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub(super) struct Fail {
    #[serde(default, rename = "Comment")]
    pub(super) _comment: Option<String>,
    #[serde(default)]
    pub(super) error: Option<String>,
    #[serde(default)]
    pub(super) cause: Option<String>,
}

/// What a Task runs: a dbroles step, or another loaded definition.
#[derive(Debug, Clone)]
pub(super) enum Target {
    Step(Step),
    Execution(Arc<Executor>),
}

/// A checked set of states: a definition's, or a Map's item processor's.
#[derive(Debug)]
pub(super) struct Machine {
    pub(super) start_at: String,
    pub(super) states: BTreeMap<String, StateDef>,
    pub(super) tasks: BTreeMap<String, Target>,
    /// Each Map state's item processor.
    pub(super) maps: BTreeMap<String, Machine>,
}

/// A loaded, checked definition whose Tasks all name a step or a known definition.
#[derive(Debug)]
pub struct Executor {
    pub(super) machine: Machine,
    pub(super) timeout_seconds: Option<u64>,
    /// Waits are multiplied by this (shortened locally).
    pub(super) wait_scale: f64,
}

/// The definitions a `startExecution` Task may name, by how the definition names them.
pub type Machines = BTreeMap<String, Arc<Executor>>;

/// A definition this executor cannot run: the message names the construct.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DefinitionError(pub String);

pub(super) fn refuse<T>(message: String) -> Result<T, DefinitionError> {
    Err(DefinitionError(message))
}

/// `$` or `$.name`: the only paths a result is written to, or a choice reads.
pub(super) fn field_of(path: &str) -> Result<Option<&str>, DefinitionError> {
    match path {
        "$" => Ok(None),
        _ => match path.strip_prefix("$.") {
            Some(name) if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => Ok(Some(name)),
            _ => refuse(format!("the path '{path}' is not supported (only $ and $.name)")),
        },
    }
}

/// A path read from the input (`$`, `$.a.b`) or from the context object (`$$.Map.Item.Value`).
pub(super) fn read_path<'a>(path: &str, data: &'a Value, context: &'a Value) -> Option<&'a Value> {
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
