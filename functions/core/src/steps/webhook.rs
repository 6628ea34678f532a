//! The send-webhook step: sends the finished job to the webhook and records how that went; it never fails the job.

use super::{State, StepError};
use crate::deps::Deps;
use crate::model::job::WebhookStatus;

/// Sends the finished job to the webhook and records how that went; never fails the job.
pub(super) async fn run(deps: &Deps, state: State) -> Result<State, StepError> {
    if !state.send_webhook {
        return Ok(state);
    }
    let Some(mut record) = deps.jobs.get_job(&state.org_id, &state.job_id).await? else { return Ok(state) };
    let status = match &deps.webhook {
        Some(webhook) => webhook.deliver(&record.job).await,
        None => {
            WebhookStatus { delivered: false, attempts: 0, status_code: None, message: "no webhook URL is configured".into() }
        }
    };
    record.job.webhook_status = Some(status);
    deps.jobs.save_finished(&record).await?;
    Ok(state)
}
