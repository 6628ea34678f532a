//! The `Workflow` port: starts the execution that carries a job out.
//! The in-process adapter runs the job's steps on this process's runtime (the
//! local server); the Step Functions adapter arrives with the workflow.

use std::sync::Arc;

use async_trait::async_trait;

use crate::inventory::Inventory;
use crate::job::JobRecord;
use crate::runner::{self, Settings};
use crate::secrets::SecretStore;
use crate::store::JobStore;

#[async_trait]
pub trait Workflow: Send + Sync {
    /// Starts carrying out a stored job; returns the execution's id.
    async fn start(&self, record: &JobRecord) -> Result<String, String>;
}

/// Runs jobs as tasks of this process.
pub struct InProcess {
    pub store: Arc<dyn JobStore>,
    pub inventory: Arc<dyn Inventory>,
    pub secrets: Arc<dyn SecretStore>,
    pub settings: Settings,
}

#[async_trait]
impl Workflow for InProcess {
    async fn start(&self, record: &JobRecord) -> Result<String, String> {
        let (store, inventory, secrets, settings) =
            (self.store.clone(), self.inventory.clone(), self.secrets.clone(), self.settings.clone());
        let mut record = record.clone();
        let execution = format!("local:{}", record.id());
        tokio::spawn(async move {
            runner::provision(&mut record, inventory.as_ref(), secrets.as_ref(), &settings).await;
            if let Err(error) = runner::finalize(&mut record, store.as_ref(), &settings).await {
                eprintln!("dbroles: finishing job {} failed: {error}", record.id());
            }
        });
        Ok(execution)
    }
}
