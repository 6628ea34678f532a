//! The EventBridge adapter of [`Events`]: `PutEvents` on the deployment's bus.

use async_trait::async_trait;

use super::{Events, NotifyError, EVENT_SOURCE, JOB_FINISHED};
use crate::job::Job;

pub struct EventBridgeEvents {
    pub client: aws_sdk_eventbridge::Client,
    pub bus: String,
}

#[async_trait]
impl Events for EventBridgeEvents {
    async fn job_finished(&self, job: &Job) -> Result<(), NotifyError> {
        let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(EVENT_SOURCE)
            .detail_type(JOB_FINISHED)
            .resources(job.db_arn())
            .detail(serde_json::to_string(job).map_err(|e| NotifyError(e.to_string()))?)
            .build();
        let out = self.client.put_events().entries(entry).send().await.map_err(|e| NotifyError(crate::aws::describe(&e)))?;
        match out.failed_entry_count() {
            0 => Ok(()),
            _ => Err(NotifyError(out.entries().iter().filter_map(|e| e.error_message()).collect::<Vec<_>>().join("; "))),
        }
    }
}
