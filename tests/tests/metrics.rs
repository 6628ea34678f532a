//! The EMF metrics of a real local job: installed as a Lambda installs them, a
//! job carried out by the provisioning definition on an RDS-like PostgreSQL, and
//! the lines a flush writes. The collector is the process's, so this binary holds
//! only this test.

use std::collections::BTreeMap;
use std::sync::Arc;

use dbroles_core::deps::App;
use dbroles_core::executor::Executor;
use dbroles_core::executor::Local;
use dbroles_core::inventory::local::LocalInventory;
use dbroles_core::lifecycle::jobs;
use dbroles_core::store::sqlite::SqliteStore;
use dbroles_core::workflow::Workflow;
use dbroles_tests::*;
use serde_json::{json, Value};

/// Each metric's value and dimensions, from the EMF lines.
fn metrics(lines: &str) -> Vec<(String, Value, BTreeMap<String, String>, Value)> {
    let mut found = Vec::new();
    for line in lines.lines() {
        let document: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let spec = &document["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(spec["Namespace"], "dbroles-test");
        let dimensions: BTreeMap<String, String> = spec["Dimensions"][0]
            .as_array()
            .unwrap()
            .iter()
            .map(|name| (name.as_str().unwrap().to_string(), document[name.as_str().unwrap()].as_str().unwrap().to_string()))
            .collect();
        for metric in spec["Metrics"].as_array().unwrap() {
            let name = metric["Name"].as_str().unwrap().to_string();
            found.push((name.clone(), document[&name].clone(), dimensions.clone(), document["job_id"].clone()));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_job_writes_its_metrics_as_emf_lines() {
    dbroles_core::metrics::install("dbroles-test").unwrap();
    let cluster = PgCluster::start();
    cluster.rds_like().await;
    let arn = "arn:aws:rds:us-east-1:000000000000:db:metered";
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap());
    let inventory = Arc::new(LocalInventory::new(vec![cluster.local_instance(arn)]).unwrap());
    let deps = dbroles_core::wiring::local(store, inventory, settings("hoop"));
    let local = Arc::new(Local::new(Executor::provision(0.01), deps.clone()));
    let app = App::new(&deps, local.clone());
    let request = serde_json::from_value(json!({
        "agent_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890", "aws": {"instance_arn": arn},
        "connection_prefix_name": "m-", "job_steps": []
    }))
    .unwrap();
    let id = jobs::start(&app, ORG, "alice", request, None).await.unwrap();
    local.wait(&local.execution_id(&id)).await;
    assert_eq!(
        jobs::find(app.deps.jobs.as_ref(), ORG, &id).await.unwrap().job.phase(),
        dbroles_core::model::job::Phase::Completed
    );

    let mut out = Vec::new();
    dbroles_core::metrics::flush(&[("org_id", ORG), ("job_id", &id)], &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let found = metrics(&text);
    let postgres = BTreeMap::from([("Engine".to_string(), "postgres".to_string()), ("Mode".to_string(), "run".to_string())]);
    let none = BTreeMap::new();
    let value = |name: &str, dimensions: &BTreeMap<String, String>| {
        let (_, value, _, job) = found
            .iter()
            .find(|(n, _, d, _)| n == name && d == dimensions)
            .unwrap_or_else(|| panic!("no {name} by {dimensions:?}: {text}"));
        assert_eq!(job, &json!(id), "{name} carries the job in its properties, not its dimensions");
        value.clone()
    };
    for name in ["JobsStarted", "JobsCompleted"] {
        assert_eq!(value(name, &postgres), json!(1), "{name} by engine and mode");
        assert_eq!(value(name, &none), json!(1), "{name} in all");
    }
    assert_eq!(value("RolesRotated", &none), json!(3));
    // The RDS-like cluster has one database the master may not enter.
    assert_eq!(value("DatabasesSkipped", &none), json!(1));
    let duration = value("ProvisioningDuration", &none);
    let seconds = duration.as_array().map_or_else(|| duration.as_f64(), |values| values[0].as_f64()).unwrap();
    assert!(seconds > 0.0, "{duration}");
    assert!(!text.contains("JobsFailed"), "no failure recorded: {text}");
    // A second flush has nothing new.
    let mut again = Vec::new();
    dbroles_core::metrics::flush(&[], &mut again).unwrap();
    assert!(!String::from_utf8(again).unwrap().contains("JobsStarted"));
}
