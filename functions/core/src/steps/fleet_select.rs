//! The fleet-select step: resolves the fleet job's selector into its instances, the Map's items.

use super::StepError;
use crate::deps::Deps;
use crate::lifecycle::fleet;
use crate::model::fleet::{FleetInput, Selection};

pub(super) async fn run(deps: &Deps, input: FleetInput) -> Result<Selection, StepError> {
    Ok(fleet::select(deps, &input).await?)
}
