//! Loading a definition: every state checked (transitions lead to states that
//! exist, paths are supported, Tasks run a step or a loaded definition), and
//! anything else refused with a message naming it.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::definition::{
    field_of, refuse, Catcher, Choice, Definition, DefinitionError, Executor, Machine, Machines, Processor, StateDef, Target,
    Task, FLEET_DEFINITION, PROVISION_DEFINITION, PROVISION_MACHINE, START_EXECUTION,
};
use crate::steps::Step;

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

fn transition(name: &str, next: &Option<String>, end: bool) -> Result<(), DefinitionError> {
    match (next, end) {
        (Some(_), false) | (None, true) => Ok(()),
        _ => refuse(format!("state {name}: give exactly one of Next and End")),
    }
}

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
        let known = |next: &str| self.known(name, next);
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
            StateDef::Choice(choice) => self.check_choice(name, choice).map(|_| None),
            StateDef::Wait(wait) => known_next(&wait.next, wait.end).map(|_| None),
            StateDef::Pass(pass) => {
                known_next(&pass.next, pass.end)?;
                field_of(&pass.result_path).map(|_| None)
            }
            StateDef::Succeed(_) | StateDef::Fail(_) => Ok(None),
        }
    }

    /// The state `next` a transition of `name` leads to exists.
    fn known(&self, name: &str, next: &str) -> Result<(), DefinitionError> {
        match self.states.contains_key(next) {
            true => Ok(()),
            false => refuse(format!("state {name}: the next state {next} does not exist")),
        }
    }

    /// Each rule reads `$.name`, compares with one value, and leads to a state that exists.
    fn check_choice(&self, name: &str, choice: &Choice) -> Result<(), DefinitionError> {
        for rule in &choice.choices {
            self.known(name, &rule.next)?;
            if field_of(&rule.variable)?.is_none() {
                return refuse(format!("state {name}: a Choice variable must be $.name"));
            }
            if rule.boolean_equals.is_some() == rule.string_equals.is_some() {
                return refuse(format!("state {name}: each choice needs one of BooleanEquals and StringEquals"));
            }
        }
        choice.default.as_deref().map_or(Ok(()), |next| self.known(name, next))
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
}
