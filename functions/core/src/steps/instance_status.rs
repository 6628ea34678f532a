//! The instance-status step: after a master password reset, or for a cluster's writer, waits for the instance to be `available`.

use super::job::{instance, load};
use super::{ErrorType, State, StepError};
use crate::deps::Deps;

/// Status checks after a master password reset before the job gives up (with the
/// state machine's 30 s wait: 20 minutes).
pub const MAX_STATUS_CHECKS: u32 = 40;

/// After a reset, or for a cluster's writer: is the instance `available` (again)?
pub(super) async fn run(deps: &Deps, mut state: State) -> Result<State, StepError> {
    let record = load(deps, &state).await?;
    let instance = instance(deps, &record).await?;
    if instance.status == "available" {
        // The instance has the new master password: it becomes the one in force.
        deps.inventory.promote_master_password(&instance).await?;
        state.master_ready = true;
        return Ok(state);
    }
    state.status_checks += 1;
    if state.status_checks >= MAX_STATUS_CHECKS {
        return Err(StepError::new(
            ErrorType::InstanceNotAvailable,
            format!("{} is still '{}' after {} status checks", instance.identifier, instance.status, state.status_checks),
        ));
    }
    Ok(state)
}
