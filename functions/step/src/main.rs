//! Every Task of the state machine: resolve, open-network, master-credentials,
//! instance-status, provision, create-connections, hook, finalize, webhook. Each
//! is a function of its own in `template.yaml` (its own role, its own
//! `DBROLES_STEP`); they share this binary, which SAM builds once.

// The runtime loop around a step's future nests deeper than the default limit allows.
#![recursion_limit = "256"]

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    dbroles_lambda::run_step().await
}
