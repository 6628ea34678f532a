//! The run-hook step: runs the deployment's hook with the job (no secrets) and records its outcome.

use std::time::Instant;

use super::job::{load, save};
use super::{State, StepError};
use crate::deps::Deps;
use crate::model::job::HookStatus;
use crate::model::request::Mode;

/// The most of a hook's output a job keeps.
pub const HOOK_OUTPUT_LIMIT: usize = 4096;

/// Runs the deployment's hook with the job (no secrets) and records its outcome.
/// A plan runs no hook: nothing changed for it to act on.
pub(super) async fn run(deps: &Deps, state: State) -> Result<State, StepError> {
    let Some(hook) = &deps.hook else { return Ok(state) };
    let mut record = load(deps, &state).await?;
    if record.request.mode == Mode::Plan {
        return Ok(state);
    }
    let started = Instant::now();
    let outcome = hook.run(&record.job).await;
    let mut output = outcome.output;
    if output.len() > HOOK_OUTPUT_LIMIT {
        let mut end = HOOK_OUTPUT_LIMIT;
        while !output.is_char_boundary(end) {
            end -= 1;
        }
        output.truncate(end);
    }
    record.job.hook_status =
        Some(HookStatus { execution_time_sec: started.elapsed().as_secs() as i64, exit_code: outcome.exit_code, output });
    save(deps, &record).await?;
    Ok(state)
}
