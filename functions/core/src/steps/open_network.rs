//! The open-network step: lets `ingress_cidr` reach the database port through a security group of dbroles'.

use super::job::{instance, load, may_change};
use super::{ErrorType, State, StepError};
use crate::deps::Deps;

/// Lets `ingress_cidr` reach the database port through a security group of dbroles'.
pub(super) async fn run(deps: &Deps, state: State) -> Result<State, StepError> {
    let record = load(deps, &state).await?;
    let Some(group) = &record.request.aws.default_security_group else { return Ok(state) };
    let network = deps.network.as_ref().ok_or_else(|| {
        StepError::new(ErrorType::NotSupported, "aws.default_security_group: this deployment cannot change security groups")
    })?;
    let instance = instance(deps, &record).await?;
    may_change(&record, &instance, "aws.default_security_group")?;
    network.open(&instance, &group.ingress_cidr).await?;
    Ok(state)
}
