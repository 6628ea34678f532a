//! The fleet-finish step: counts the fleet job's instances, finishes it and announces it.

use super::{CaughtError, FleetState, StepError};
use crate::deps::Deps;
use crate::lifecycle::fleet;
use crate::model::fleet::FleetInput;

pub(super) async fn run(deps: &Deps, state: FleetState) -> Result<FleetState, StepError> {
    let input = FleetInput { org_id: state.org_id.clone(), fleet_job_id: state.fleet_job_id.clone() };
    fleet::finish(deps, &input, state.error.as_ref().map(CaughtError::message)).await?;
    Ok(FleetState { error: None, ..state })
}
