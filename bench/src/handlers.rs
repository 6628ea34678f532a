//! Warm API handler latency on the embedded store: create, get and list, through
//! the router the API Lambda runs. Starting the workflow is left out (it is an
//! HTTP call to Step Functions on AWS).

use std::sync::Arc;
use std::time::{Duration, Instant};

use dbroles_core::api::{self, Authenticated};
use dbroles_core::auth::Caller;
use dbroles_core::config::Settings;
use dbroles_core::deps::App;
use dbroles_core::inventory::local::{LocalInstance, LocalInventory};
use dbroles_core::model::fleet::FleetRecord;
use dbroles_core::model::job::JobRecord;
use dbroles_core::store::sqlite::SqliteStore;
use dbroles_core::workflow::{ExecutionState, Workflow, WorkflowError};
use serde_json::{json, Value};
use tower::ServiceExt;

use super::{millis, quantile, Row};

const REQUESTS: usize = 1000;

/// A workflow that starts nothing.
struct NoWorkflow;

#[async_trait::async_trait]
impl Workflow for NoWorkflow {
    fn execution_id(&self, job_id: &str) -> String {
        format!("bench:{job_id}")
    }

    fn fleet_execution_id(&self, fleet_job_id: &str) -> Option<String> {
        Some(format!("bench:{fleet_job_id}"))
    }

    async fn start(&self, _record: &JobRecord) -> Result<(), WorkflowError> {
        Ok(())
    }

    async fn start_fleet(&self, _record: &FleetRecord) -> Result<(), WorkflowError> {
        Ok(())
    }

    async fn execution_state(&self, _execution: &str) -> Result<ExecutionState, WorkflowError> {
        Ok(ExecutionState::Running)
    }

    async fn stop(&self, _execution: &str, _cause: &str) -> Result<(), WorkflowError> {
        Ok(())
    }
}

/// The organisation of the measured requests.
const ORG: &str = "bench";

pub async fn run(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(&dir.path().join("bench.db"))?);
    let arn = |i: usize| format!("arn:aws:rds:us-east-1:000000000000:db:bench-{i}");
    let instances =
        (0..REQUESTS).map(|i| LocalInstance::on_loopback(&arn(i), "postgres", 5432, "postgres").tagged_for(ORG)).collect();
    // The organisation the requests come from may use the local account.
    let accounts =
        dbroles_core::model::account::AccountPolicy { home_orgs: vec![ORG.into()], role_name: None, ..Default::default() };
    // Every request's job stays running (no workflow carries it out): the
    // organisation's fair share must hold them all, or creates get 429.
    let settings = Settings { accounts, org_concurrency: REQUESTS + 1, ..Settings::default() };
    let deps = dbroles_core::wiring::local(store, Arc::new(LocalInventory::new(instances)?), settings);
    let app = App::new(&deps, Arc::new(NoWorkflow));
    // The router the API Lambda runs, built once as the Lambda builds it.
    let app = api::router(Arc::new(app));

    let mut ids = Vec::with_capacity(REQUESTS);
    let mut create = Vec::with_capacity(REQUESTS);
    for i in 0..REQUESTS {
        let body = json!({
            "agent_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
            "aws": {"instance_arn": arn(i)},
            "connection_prefix_name": "bench-",
            "job_steps": ["create-connections"]
        });
        let (elapsed, answer) = call(&app, "POST", "/dbroles/jobs", Some(body)).await?;
        create.push(elapsed);
        ids.push(answer["job_id"].as_str().unwrap_or_default().to_string());
    }
    let mut get = Vec::with_capacity(REQUESTS);
    for id in &ids {
        get.push(call(&app, "GET", &format!("/dbroles/jobs/{id}"), None).await?.0);
    }
    let mut list = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        list.push(call(&app, "GET", "/dbroles/jobs?limit=20", None).await?.0);
    }
    for (name, mut times) in [("create", create), ("get", get), ("list (20 of 1,000)", list)] {
        times.sort();
        rows.push(Row::new(
            format!("API {name}, embedded store: p50 / p99 of {REQUESTS}"),
            format!("{} / {}", millis(quantile(&times, 0.5)), millis(quantile(&times, 0.99))),
            "",
        ));
    }
    Ok(())
}

async fn call(router: &axum::Router, method: &str, uri: &str, body: Option<Value>) -> anyhow::Result<(Duration, Value)> {
    let caller = Caller { sub: "bench".into(), org: ORG.into(), groups: vec!["admin".into()] };
    let body = body.map(|b| axum::body::Body::from(b.to_string())).unwrap_or_default();
    let request = http::Request::builder().method(method).uri(uri).extension(Authenticated(Ok(caller))).body(body)?;
    let started = Instant::now();
    let response = router.clone().oneshot(request).await?;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
    let elapsed = started.elapsed();
    anyhow::ensure!(status.is_success(), "{method} {uri}: {status} {}", String::from_utf8_lossy(&bytes));
    Ok((elapsed, serde_json::from_slice(&bytes)?))
}
