//! Every sample event in `events/api/` through the Lambda's entry point, on moto:
//! the DynamoDB store, the RDS inventory and the Step Functions workflow.

use std::path::PathBuf;

use dbroles_core::config::Config;
use dbroles_core::config::Settings;
use dbroles_core::lifecycle::jobs;
use dbroles_core::model::account::AccountPolicy;
use dbroles_core::model::job::Phase;
use dbroles_core::model::request::CreateJobRequest;
use dbroles_core::store::dynamodb::DynamoStore;
use dbroles_core::store::{JobStore, NewJob};
use dbroles_tests::{aws_config, create_instance, moto_endpoint, template_actions, unique, ActionRecorder};
use serde_json::{json, Value};

const FINISHED_JOB: &str = "0B5C3A2E-6D1F-4E8B-9A7C-3F2E1D0C9B8A";
const RUNNING_JOB: &str = "7E6D5C4B-3A29-4817-B6F5-E4D3C2B1A098";
const RUNNING_FLEET: &str = "F1EE7A5B-0C1D-4E2F-8A3B-4C5D6E7F8091";

/// In the order they run: each file, the status it gets, and what else the user sees.
const EXPECTED: &[(&str, u16, &str)] = &[
    ("create-job.json", 202, "job_id"),
    ("create-job-invalid-agent-id.json", 400, "agent_id: must be a UUID"),
    ("create-job-truncated-json.json", 400, "EOF"),
    ("create-job-bad-rotation.json", 400, "aws.rotation: unknown variant `weekly`, expected `single` or `alternating`"),
    ("create-job-bad-mode.json", 400, "mode: unknown variant `dry-run`, expected one of `run`, `revoke`, `plan`"),
    ("create-job-bad-max-db-connections.json", 400, "aws.max_db_connections: must be 1 to 32, not 64"),
    ("create-job-bad-scope.json", 400, "scope.levels[1]: unknown variant `admin`, expected one of `ro`, `rw`, `ddl`"),
    ("create-job-unknown-instance.json", 404, "aws.instance_arn: no instance or cluster"),
    ("create-job-no-token.json", 401, "missing bearer token"),
    ("create-job-not-admin.json", 403, "admin group"),
    ("register-account.json", 200, "dbroles-"),
    ("create-job-unregistered-account.json", 403, "may not act on AWS account 222222222222"),
    ("list-accounts.json", 200, "111111111111"),
    ("get-account.json", 200, "assumed-role/dbroles/"),
    ("get-job-group-with-a-space.json", 403, "reading needs one of the groups admin, auditor"),
    ("list-jobs.json", 200, FINISHED_JOB),
    ("list-jobs-bad-limit.json", 400, "limit: expected 1 to 100"),
    ("job-stats.json", 200, "by_engine"),
    ("get-job.json", 200, FINISHED_JOB),
    ("get-job-other-org.json", 404, "no job"),
    ("get-job-under-api.json", 200, FINISHED_JOB),
    ("delete-job-running.json", 409, "is running: cancel it first"),
    ("cancel-job.json", 200, "cancelled by 4f1c2a9e-7d3b-4e8a-9c51-2b6d8e0f1a37"),
    ("delete-job.json", 204, ""),
    ("create-fleet-job.json", 202, "fleet_job_id"),
    ("create-fleet-job-bad-concurrency.json", 400, "max_concurrency: must be 1 to 1000"),
    ("list-fleet-jobs.json", 200, RUNNING_FLEET),
    ("get-fleet-job.json", 200, "\"counts\""),
    ("cancel-fleet-job.json", 200, "cancelled by 4f1c2a9e-7d3b-4e8a-9c51-2b6d8e0f1a37"),
    ("delete-fleet-job.json", 204, ""),
    ("create-resource.json", 201, "orders-ro"),
    ("create-resource-duplicate.json", 409, "already exists"),
    ("list-resources.json", 200, "orders-ro"),
    ("get-resource.json", 200, "dbroles/db-arn"),
    ("put-resource.json", 200, "5433"),
    ("delete-resource.json", 204, ""),
    ("delete-account.json", 204, ""),
    ("openapi.json", 200, "/dbroles/jobs/{id}/cancel"),
    ("openapiv3-no-token.json", 200, "\"401\""),
];

fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../events/api")
}

/// The deployment the events run against: a table, an RDS instance and a state machine in moto.
async fn deployment() -> (Config, aws_config::SdkConfig) {
    let aws = aws_config(&moto_endpoint()).await;
    let table = unique("jobs-");
    DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), &table).create_table().await.unwrap();
    // The role register-account.json names, trusting acme's ExternalId as an administrator would set it up.
    dbroles_tests::trusting_role(&aws, "111111111111", "dbroles", Some(&dbroles_core::model::account::external_id("acme"))).await;
    let rds = aws_sdk_rds::Client::new(&aws);
    if rds.describe_db_instances().db_instance_identifier("orders-db").send().await.is_err() {
        let org = aws_sdk_rds::types::Tag::builder().key("dbroles:org").value("acme").build();
        create_instance(&aws, "orders-db", "postgres", "postgres")
            .manage_master_user_password(true)
            .tags(org)
            .send()
            .await
            .unwrap();
    }
    let definition = json!({"StartAt": "Wait", "States": {"Wait": {"Type": "Pass", "End": true}}});
    let machine = |name: &str| {
        aws_sdk_sfn::Client::new(&aws)
            .create_state_machine()
            .name(unique(name))
            .definition(definition.to_string())
            .role_arn("arn:aws:iam::123456789012:role/dbroles-states")
            .send()
    };
    let (provision, fleet) = (machine("provision-").await.unwrap(), machine("fleet-").await.unwrap());
    let config = Config {
        table: table.clone(),
        state_machine_arn: Some(provision.state_machine_arn),
        fleet_state_machine_arn: Some(fleet.state_machine_arn),
        org_claim: "org_id".into(),
        credentials: dbroles_core::config::CredentialsStore::Database { key: None },
        secret_prefix: "dbroles/".into(),
        endpoint_overrides: Default::default(),
        metrics_namespace: "dbroles".into(),
        settings: Settings {
            accounts: AccountPolicy { home_orgs: vec!["acme".into()], role_name: Some("dbroles*".into()), ..Default::default() },
            ..Settings::default()
        },
        ..Config::new("")
    };
    (config, aws)
}

/// A finished and a running job of the organisation `acme`, and a running fleet job, with the events' ids.
async fn seed(store: &DynamoStore) {
    use dbroles_core::store::FleetStore;
    let fleet: dbroles_core::model::fleet::FleetRecord = serde_json::from_value(json!({
        "fleet": {
            "id": RUNNING_FLEET, "org_id": "acme", "created_at": "2026-11-22T10:00:00Z", "completed_at": null,
            "created_by": "seed",
            "request": {"selector": {"engines": ["postgres"]}, "agent_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890"},
            "status": {"phase": "running", "message": "the fleet job is provisioning 0 instances", "counts": {
                "total": 0, "pending": 0, "running": 0, "completed": 0, "failed": 0, "skipped": 0}, "not_started": []}
        },
        "execution": null,
        "selected": []
    }))
    .unwrap();
    store.create_fleet(&fleet).await.unwrap();
    for (id, instance, finished) in [(FINISHED_JOB, "billing-db", true), (RUNNING_JOB, "ledger-db", false)] {
        let request: CreateJobRequest = serde_json::from_value(json!({
            "agent_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
            "aws": {"instance_arn": format!("arn:aws:rds:us-east-1:123456789012:db:{instance}")},
            "connection_prefix_name": "seed-",
            "job_steps": []
        }))
        .unwrap();
        let spec = dbroles_core::model::job::JobSpec {
            db_arn: request.aws.instance_arn.clone(),
            db_engine: "postgres".into(),
            ..Default::default()
        };
        let mut record = jobs::new_record("acme", "seed", request, spec);
        record.job.id = id.into();
        record.lock = record.job.db_arn().to_string();
        let lease_until = Settings::default().lease();
        store.create_job(NewJob { record: record.clone(), idempotency: None, lease_until }).await.unwrap();
        if finished {
            record.finish(Phase::Completed, "All user roles have been successfully provisioned");
            assert!(store.finish_job(&record, Settings::default().expiry()).await.unwrap());
        }
    }
}

/// An API Gateway event through the router, as `lambda_http::run` hands it over.
async fn answer(router: &axum::Router, event: lambda_http::Request) -> http::Response<Vec<u8>> {
    use tower::ServiceExt;
    let request = event.map(|body| axum::body::Body::from(body.as_ref().to_vec()));
    let response = router.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    http::Response::from_parts(parts, axum::body::to_bytes(body, usize::MAX).await.unwrap().to_vec())
}

#[tokio::test]
async fn every_api_event_gets_its_answer() {
    let (config, aws) = deployment().await;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), &config.table);
    seed(&store).await;
    // The Lambda's AWS calls go through a recorder: the template must grant what it does.
    let recorder = ActionRecorder::start(&moto_endpoint()).await;
    let app = dbroles_api::app_on(&config, &aws_config(&recorder.endpoint).await).await.unwrap();
    let router = dbroles_api::router(std::sync::Arc::new(app.clone()), &config.org_claim);
    let granted = template_actions("ApiFunction");
    let mut taken = std::collections::BTreeSet::new();

    let mut files: Vec<String> =
        std::fs::read_dir(events_dir()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    files.sort();
    let mut expected: Vec<&str> = EXPECTED.iter().map(|(file, ..)| *file).collect();
    expected.sort();
    assert_eq!(files, expected, "every event file has an expectation here");

    let mut created_job = None;
    for (file, status, needle) in EXPECTED {
        let text = std::fs::read_to_string(events_dir().join(file)).unwrap();
        let event = lambda_http::request::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        recorder.take();
        let response = answer(&router, event).await;
        let actions = recorder.take();
        let missing: Vec<&String> = actions.iter().filter(|a| *a != "sts:GetCallerIdentity" && !granted.contains(*a)).collect();
        assert!(missing.is_empty(), "{file}: template.yaml does not grant ApiFunction {missing:?}");
        taken.extend(actions);
        let body = String::from_utf8(response.body().to_vec()).unwrap();
        assert_eq!(response.status().as_u16(), *status, "{file}: {body}");
        assert!(body.contains(needle), "{file}: '{needle}' not in {body}");
        assert!(!body.contains("s3cr3t-never-shown"), "{file}: a role secret came back");
        if *status >= 400 {
            let message: Value = serde_json::from_str(&body).unwrap();
            assert!(message["message"].is_string(), "{file}: {body}");
        }
        if *file == "create-job.json" {
            created_job = Some(serde_json::from_str::<Value>(&body).unwrap()["job_id"].as_str().unwrap().to_string());
        }
    }

    for action in ["dynamodb:PutItem", "dynamodb:Query", "rds:DescribeDBInstances", "states:StartExecution"] {
        assert!(taken.contains(action), "the events went through the recorder: no {action} in {taken:?}");
    }

    // The created job is stored, running, with its execution named after it.
    let id = created_job.unwrap();
    let record = store.get_job("acme", &id).await.unwrap().expect("the created job is stored");
    assert_eq!(record.job.phase(), Phase::Running);
    assert_eq!(record.job.spec.as_ref().unwrap().db_engine, "postgres");
    let execution = record.execution.expect("the job names its execution");
    assert!(execution.ends_with(&format!(":{id}")), "{execution}");
    let described = aws_sdk_sfn::Client::new(&aws).describe_execution().execution_arn(&execution).send().await.unwrap();
    let input: Value = serde_json::from_str(described.input().unwrap()).unwrap();
    assert_eq!(input, json!({"org_id": "acme", "job_id": id}));

    // The same event again (same Idempotency-Key, same body) is the same job.
    let text = std::fs::read_to_string(events_dir().join("create-job.json")).unwrap();
    let response = answer(&router, lambda_http::request::from_str(&text).unwrap()).await;
    assert_eq!(response.status().as_u16(), 202);
    assert!(String::from_utf8(response.body().to_vec()).unwrap().contains(&id));

    // The cancelled job failed, naming who cancelled it; the deleted one is gone.
    let cancelled = store.get_job("acme", RUNNING_JOB).await.unwrap().unwrap();
    assert_eq!(cancelled.job.phase(), Phase::Failed);
    assert!(cancelled.job.completed_at.is_some());
    assert!(store.get_job("acme", FINISHED_JOB).await.unwrap().is_none());

    // Cancelling the created job stops its Step Functions execution.
    let caller = dbroles_core::auth::Caller { sub: "alice".into(), org: "acme".into(), groups: vec!["admin".into()] };
    let request = http::Request::post(format!("/dbroles/jobs/{id}/cancel")).body(bytes::Bytes::new()).unwrap();
    recorder.take();
    let response = dbroles_tests::call_api(&app, Ok(caller), request).await;
    assert_eq!(response.status().as_u16(), 200, "{}", response.body());
    let actions = recorder.take();
    assert!(actions.contains("states:StopExecution"), "{actions:?}");
    assert!(actions.iter().all(|a| a == "sts:GetCallerIdentity" || granted.contains(a)), "not all granted: {actions:?}");
    let stopped = aws_sdk_sfn::Client::new(&aws).describe_execution().execution_arn(&execution).send().await.unwrap();
    assert_eq!(stopped.status, aws_sdk_sfn::types::ExecutionStatus::Aborted);
}
