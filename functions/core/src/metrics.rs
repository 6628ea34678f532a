//! CloudWatch metrics as Embedded Metric Format log lines: no API call, no
//! latency. The lifecycle records through the `metrics` facade; a process that
//! [`install`]s the collector writes one EMF line per dimension set when it
//! [`flush`]es (a Lambda after each invocation). Without it, recording is free.
//!
//! | metric | unit | dimensions | recorded by |
//! | --- | --- | --- | --- |
//! | `JobsStarted` | count | `Engine`, `Mode`; and none (the total) | [`crate::lifecycle::jobs::start`] |
//! | `JobsCompleted`, `JobsFailed` | count | `Engine`, `Mode`; and none (the total the alarm watches) | [`crate::lifecycle::jobs::finalize`] |
//! | `ProvisioningDuration` | seconds | none | [`crate::lifecycle::jobs::finalize`] |
//! | `RolesRotated` | count | none | [`crate::lifecycle::jobs::finalize`]: roles that got a new password |
//! | `DatabasesSkipped` | count | none | [`crate::lifecycle::jobs::finalize`]: databases the master could not enter or grant in |
//! | `FleetInstances` | count | `Outcome` | [`crate::lifecycle::fleet::finish`] |
//! | `JobsStuck` | count | none | [`crate::lifecycle::jobs::sweep`], [`crate::lifecycle::fleet::sweep`]: jobs and fleet jobs whose execution never started or vanished |
//!
//! Dimensions stay few-valued: the organisation, instance and job go in the
//! line's properties ([`flush`]), never in a dimension.

use std::sync::OnceLock;

use metrics_cloudwatch_embedded::Collector;

use crate::model::job::{Job, Phase};

/// What every job does today: provision (plans and revokes will be modes of their own).
pub const MODE_RUN: &str = "run";

static COLLECTOR: OnceLock<&'static Collector> = OnceLock::new();

/// Installs the process's collector under `namespace` (once; later calls return the first).
pub fn install(namespace: &str) -> Result<&'static Collector, String> {
    if let Some(collector) = COLLECTOR.get() {
        return Ok(collector);
    }
    let collector = metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace(namespace.to_string())
        .init()
        .map_err(|e| format!("the metrics collector: {e}"))?;
    Ok(COLLECTOR.get_or_init(|| collector))
}

/// Writes what was recorded since the last flush as EMF lines to `writer`, with
/// `properties` (the job's organisation and ids) on each line; nothing if no collector is installed.
pub fn flush(properties: &[(&str, &str)], writer: impl std::io::Write) -> std::io::Result<()> {
    let Some(collector) = COLLECTOR.get() else { return Ok(()) };
    for (name, value) in properties {
        collector.set_property(name.to_string(), *value);
    }
    let flushed = collector.flush(writer);
    for (name, _) in properties {
        collector.remove_property(*name);
    }
    flushed
}

/// A count by engine and mode, and its total (alarms and dashboards read the total).
fn count_job(name: &'static str, engine: &str) {
    metrics::counter!(name, "Engine" => engine.to_string(), "Mode" => MODE_RUN).increment(1);
    metrics::counter!(name).increment(1);
}

pub fn job_started(engine: &str) {
    count_job("JobsStarted", engine);
}

/// A job's end: its outcome, how long it took, and what its roles say.
pub fn job_finished(job: &Job) {
    let name = match job.phase() {
        Phase::Completed => "JobsCompleted",
        _ => "JobsFailed",
    };
    count_job(name, job.db_engine());
    if let Some(done) = job.completed_at {
        let seconds = (done.0 - job.created_at.0).num_milliseconds().max(0) as f64 / 1000.0;
        metrics::describe_histogram!("ProvisioningDuration", metrics::Unit::Seconds, "from a job's creation to its end");
        metrics::histogram!("ProvisioningDuration").record(seconds);
    }
    let results = job.status.as_ref().map_or(&[][..], |status| &status.result);
    let rotated = results.iter().filter(|role| role.status == Phase::Completed).count() as u64;
    metrics::counter!("RolesRotated").increment(rotated);
    // Every role names the same databases the master could not enter or grant in: the first role's count.
    let skipped = results.first().map_or(0, |role| role.message.matches("(the master may not").count()) as u64;
    metrics::counter!("DatabasesSkipped").increment(skipped);
}

pub fn fleet_finished(counts: &crate::model::fleet::FleetCounts) {
    for (outcome, count) in [("completed", counts.completed), ("failed", counts.failed), ("skipped", counts.skipped)] {
        metrics::counter!("FleetInstances", "Outcome" => outcome).increment(count);
    }
}

pub fn jobs_stuck(count: usize) {
    metrics::counter!("JobsStuck").increment(count as u64);
}
