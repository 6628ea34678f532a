//! The EventBridge adapter of [`Events`]: `PutEvents` on the deployment's bus.

use async_trait::async_trait;

use super::{Events, NotifyError, DRIFT_DETECTED, EVENT_SOURCE, FLEET_FINISHED, JOB_FINISHED};
use crate::model::fleet::FleetJob;
use crate::model::job::Job;

pub struct EventBridgeEvents {
    pub client: aws_sdk_eventbridge::Client,
    pub bus: String,
}

impl EventBridgeEvents {
    async fn put(&self, detail_type: &str, resources: Vec<String>, detail: String) -> Result<(), NotifyError> {
        let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(EVENT_SOURCE)
            .detail_type(detail_type)
            .set_resources(Some(resources))
            .detail(detail)
            .build();
        let out = self.client.put_events().entries(entry).send().await.map_err(|e| NotifyError(crate::aws::describe(&e)))?;
        match out.failed_entry_count() {
            0 => Ok(()),
            _ => Err(NotifyError(out.entries().iter().filter_map(|e| e.error_message()).collect::<Vec<_>>().join("; "))),
        }
    }
}

#[async_trait]
impl Events for EventBridgeEvents {
    async fn job_finished(&self, job: &Job) -> Result<(), NotifyError> {
        let detail = serde_json::to_string(job).map_err(|e| NotifyError(e.to_string()))?;
        self.put(JOB_FINISHED, vec![job.db_arn().to_string()], detail).await
    }

    /// The fleet job with its counts; its jobs announce themselves.
    async fn fleet_finished(&self, fleet: &FleetJob) -> Result<(), NotifyError> {
        let detail = serde_json::to_string(fleet).map_err(|e| NotifyError(e.to_string()))?;
        self.put(FLEET_FINISHED, Vec::new(), detail).await
    }

    /// The plan job, whose results list each role's changes.
    async fn drift_detected(&self, job: &Job) -> Result<(), NotifyError> {
        let detail = serde_json::to_string(job).map_err(|e| NotifyError(e.to_string()))?;
        self.put(DRIFT_DETECTED, vec![job.db_arn().to_string()], detail).await
    }
}
