//! Telling others a job finished: the ports [`Events`] (`DB Role Job Finished`,
//! and `DB Roles Drift Detected` after a plan that found drift),
//! [`Hook`] (the deployment's hook) and [`Webhook`] (the finished job POSTed),
//! and their types. Their adapters sit beside: [`eventbridge`] (EventBridge),
//! [`lambda`] (the hook as a Lambda function), [`webhook`] (Standard Webhooks over HTTP).

pub mod eventbridge;
pub mod lambda;
pub mod webhook;

use async_trait::async_trait;

use crate::model::fleet::FleetJob;
use crate::model::job::{Job, WebhookStatus};

pub const EVENT_SOURCE: &str = "dbroles";
pub const JOB_FINISHED: &str = "DB Role Job Finished";
/// The detail-type of the event a finished fleet job sends (once, whatever its size).
pub const FLEET_FINISHED: &str = "DB Role Fleet Job Finished";
/// The detail-type of the event a plan that found drift sends, one per instance.
pub const DRIFT_DETECTED: &str = "DB Roles Drift Detected";

#[async_trait]
pub trait Events: Send + Sync {
    async fn job_finished(&self, job: &Job) -> Result<(), NotifyError>;
    async fn fleet_finished(&self, fleet: &FleetJob) -> Result<(), NotifyError>;
    /// A finished plan found that a run would change the instance's roles (its
    /// results list the changes).
    async fn drift_detected(&self, job: &Job) -> Result<(), NotifyError>;
}

/// An announcement that did not get through.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct NotifyError(pub String);

/// What a hook answered.
#[derive(Clone, Debug, PartialEq)]
pub struct HookOutcome {
    pub exit_code: i64,
    pub output: String,
}

#[async_trait]
pub trait Hook: Send + Sync {
    /// Runs the hook with the job (which holds no secrets).
    async fn run(&self, job: &Job) -> HookOutcome;
}

#[async_trait]
pub trait Webhook: Send + Sync {
    /// POSTs the finished job (which holds no secrets); what became of it.
    async fn deliver(&self, job: &Job) -> WebhookStatus;
}
