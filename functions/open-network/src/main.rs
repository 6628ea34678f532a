//! Authorises the request's ingress_cidr on the database port through dbroles' security group.

// The runtime loop around a step's future nests deeper than the default limit allows.
#![recursion_limit = "256"]

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    dbroles_lambda::run_step(dbroles_core::steps::Step::OpenNetwork).await
}
