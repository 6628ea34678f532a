//! The finalize step: writes the job's final status, releases its lock and announces it.

use super::{State, StepError};
use crate::deps::Deps;
use crate::lifecycle::jobs;

/// Writes the final status, releases the lock and announces the finished job.
pub(super) async fn run(deps: &Deps, mut state: State) -> Result<State, StepError> {
    jobs::finalize(deps, &state.input(), state.error.as_ref().map(|error| error.message())).await?;
    let record = deps.jobs.get_job(&state.org_id, &state.job_id).await?;
    state.phase = record.map(|record| record.job.phase());
    Ok(state)
}
