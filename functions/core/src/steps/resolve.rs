//! The resolve step: finds the instance, checks its engine and the role prefix, and fills the job's `spec`.

use super::job::{access, instance, load, save};
use super::{ErrorType, State, StepError};
use crate::deps::Deps;
use crate::engine::{self, Family};
use crate::lifecycle::jobs;
use crate::model::request::JobStep;

/// Finds the instance, checks its engine, and fills the job's `spec`.
pub(super) async fn run(deps: &Deps, mut state: State) -> Result<State, StepError> {
    let mut record = load(deps, &state).await?;
    let instance = instance(deps, &record).await?;
    if Family::of(&instance.engine).is_none() {
        return Err(StepError::new(ErrorType::UnsupportedEngine, engine::unsupported(&instance.engine)));
    }
    let alternating = deps.settings.rotation_of(&record.request).is_alternating() && record.request.mode.follows_rotation();
    engine::validate_prefix(&deps.settings.role_prefix, &instance.engine, alternating)
        .map_err(|invalid| StepError::new(ErrorType::InvalidInput, invalid.0))?;
    let account = record.request.instance_arn().account;
    let mut spec = jobs::spec_of(&instance, &account);
    spec.account_arn = deps.inventory.caller_arn(access(&record)?).await?;
    record.job.spec = Some(spec);
    record.endpoint_host = Some(instance.endpoint_host.clone());
    save(deps, &record).await?;
    // A plan changes nothing: no security group is opened (its reads may then not reach the instance).
    state.open_network = record.request.aws.default_security_group.is_some() && record.request.mode.changes_instance();
    // A revoke removes connections instead (the provision step).
    state.create_connections = record.request.has_step(JobStep::CreateConnections) && record.request.mode.is_run();
    state.send_webhook = record.request.has_step(JobStep::SendWebhook);
    state.master_ready = false;
    state.status_checks = 0;
    Ok(state)
}
