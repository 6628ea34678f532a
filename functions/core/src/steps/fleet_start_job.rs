//! The fleet-start-job step: one Map item, the job of one instance, or why none was started.

use super::StepError;
use crate::deps::Deps;
use crate::lifecycle::fleet;
use crate::model::fleet::{ChildInput, ChildOutcome};

pub(super) async fn run(deps: &Deps, input: ChildInput) -> Result<ChildOutcome, StepError> {
    Ok(fleet::start_child(deps, &input).await?)
}
