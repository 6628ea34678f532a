//! Starts jobs for RDS instances created with the provisioning tag, rotates every
//! provisioned instance on the schedule, and fails the jobs of executions that
//! failed, timed out or were aborted.

// The runtime loop around a step's future nests deeper than the default limit allows.
#![recursion_limit = "256"]

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    dbroles_lambda::run_triggers().await
}
