//! The master-credentials step: the master credentials can be read, or the password is reset if the request allows it.

use super::job::{instance, load, may_change};
use super::{State, StepError};
use crate::deps::Deps;
use crate::inventory::InventoryError;
use crate::model::request::ArnKind;

/// Checks that the master credentials can be read, or resets the password if the
/// request allows it. An Aurora cluster without an available writer yet (one the
/// tag trigger caught as it was created) is waited for first, as after a reset.
pub(super) async fn run(deps: &Deps, mut state: State) -> Result<State, StepError> {
    let record = load(deps, &state).await?;
    let instance = instance(deps, &record).await?;
    if instance.kind == ArnKind::Cluster && instance.status != "available" {
        state.master_ready = false;
        state.status_checks = 0;
        return Ok(state);
    }
    match deps.inventory.master_credentials(&instance).await {
        Ok(_) => state.master_ready = true,
        // A plan changes nothing, the master password included.
        Err(InventoryError::NoMasterSecret(_))
            if record.request.aws.allow_master_password_reset && record.request.mode.changes_instance() =>
        {
            may_change(&record, &instance, "aws.allow_master_password_reset")?;
            deps.inventory.reset_master_password(&instance).await?;
            state.master_ready = false;
            state.status_checks = 0;
        }
        Err(error) => return Err(error.into()),
    }
    Ok(state)
}
