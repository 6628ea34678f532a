//! The jobs API through its router, on the embedded store, with jobs carried out
//! in-process against the machine's PostgreSQL and MariaDB.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dbroles_core::auth::{AuthError, Caller};
use dbroles_core::config::Settings;
use dbroles_core::deps::App;
use dbroles_core::executor::Executor;
use dbroles_core::executor::Local;
use dbroles_core::inventory::local::{LocalInstance, LocalInventory, LOCAL_MARIADB_ARN, LOCAL_POSTGRES_ARN};
use dbroles_core::model::account::AccountPolicy;
use dbroles_core::store::sqlite::SqliteStore;
use dbroles_tests::call_api;
use http::StatusCode;
use serde_json::{json, Value};

/// An instance whose port accepts connections and never answers: jobs on it stay running.
const SILENT_ARN: &str = "arn:aws:rds:us-east-1:000000000000:db:silent";

struct Harness {
    app: App,
    _dir: tempfile::TempDir,
    _silent: std::net::TcpListener,
    _leaves: dbroles_tests::Leaves,
}

fn harness(prefix: &str) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap());
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let instances = vec![
        LocalInstance::on_loopback(LOCAL_POSTGRES_ARN, "postgres", 5432, "postgres").tagged_for("org-1"),
        LocalInstance::on_loopback(LOCAL_MARIADB_ARN, "mariadb", 3306, "root").tagged_for("org-1"),
        LocalInstance::on_loopback(SILENT_ARN, "postgres", silent.local_addr().unwrap().port(), "postgres").tagged_for("org-1"),
    ];
    let inventory = Arc::new(LocalInventory::new(instances).unwrap());
    let settings = Settings {
        role_prefix: prefix.into(),
        tls: dbroles_core::engine::TlsConfig::disabled(),
        connect_timeout: Duration::from_secs(4),
        accounts: AccountPolicy { home_orgs: vec!["org-1".into(), "org-2".into()], role_name: None, ..Default::default() },
        ..Settings::default()
    };
    let deps = dbroles_core::wiring::local(store, inventory, settings);
    let app = App::new(&deps, Arc::new(Local::new(Executor::provision(0.01), deps.clone())));
    Harness { app, _dir: dir, _silent: silent, _leaves: dbroles_tests::Leaves::new().prefix(prefix) }
}

fn admin(org: &str) -> Result<Caller, AuthError> {
    Ok(Caller { sub: "alice".into(), org: org.into(), groups: vec!["admin".into()] })
}

fn reader(org: &str) -> Result<Caller, AuthError> {
    Ok(Caller { sub: "bob".into(), org: org.into(), groups: vec!["auditor".into()] })
}

fn body(arn: &str) -> Value {
    json!({
        "agent_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
        "aws": {"instance_arn": arn},
        "connection_prefix_name": "prod-postgres-",
        "job_steps": []
    })
}

async fn call(
    app: &App,
    caller: Result<Caller, AuthError>,
    method: &str,
    uri: &str,
    body: Option<&[u8]>,
    key: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = http::Request::builder().method(method).uri(uri);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let request = request.body(Bytes::copy_from_slice(body.unwrap_or_default())).unwrap();
    let response = call_api(app, caller, request).await;
    let status = response.status();
    (status, serde_json::from_str(response.body()).unwrap_or(Value::Null))
}

async fn create(app: &App, caller: Result<Caller, AuthError>, value: &Value) -> (StatusCode, Value) {
    call(app, caller, "POST", "/dbroles/jobs", Some(value.to_string().as_bytes()), None).await
}

/// Long enough for a job on the silent instance: its connection time-out is
/// transient, so Provision is tried four times before the job fails.
async fn wait_finished(app: &App, org: &str, id: &str) -> Value {
    for _ in 0..600 {
        let (status, job) = call(app, reader(org), "GET", &format!("/dbroles/jobs/{id}"), None, None).await;
        assert_eq!(status, StatusCode::OK);
        if job["status"]["phase"] != "running" {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {id} still running")
}

#[tokio::test]
async fn created_job_completes_and_has_the_seed_shape() {
    let h = harness(&dbroles_tests::unique("a"));
    let (status, created) = create(&h.app, admin("org-1"), &body(LOCAL_POSTGRES_ARN)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let id = created["job_id"].as_str().unwrap();
    let job = wait_finished(&h.app, "org-1", id).await;
    assert_eq!(job["status"]["phase"], "completed", "{job}");
    let mut keys: Vec<&str> = job.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["completed_at", "created_at", "hook_status", "id", "org_id", "spec", "status"]);
    assert!(job["hook_status"].is_null());
    assert_eq!(job["spec"]["db_engine"], "postgres");
    for result in job["status"]["result"].as_array().unwrap() {
        assert_eq!(result["status"], "completed");
        assert_eq!(result["credentials_info"]["secrets_manager_provider"], "database");
        assert!(!result.to_string().to_lowercase().contains("password\":"), "no secret in the job");
    }
    let (status, _) = call(&h.app, reader("org-2"), "GET", &format!("/dbroles/jobs/{id}"), None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another organisation sees nothing");
    let (status, page) =
        call(&h.app, reader("org-1"), "GET", "/dbroles/jobs?phase=completed&db_engine=postgres", None, None).await;
    assert_eq!((status, page["items"][0]["id"].as_str()), (StatusCode::OK, Some(id)));
}

#[tokio::test]
async fn a_prefix_too_long_for_mariadb_is_a_400_and_stores_nothing() {
    let h = harness(&"p".repeat(30));
    let (status, answer) = create(&h.app, admin("org-1"), &body(LOCAL_MARIADB_ARN)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer["message"].as_str().unwrap().contains("32 characters"), "{answer}");
    let (_, page) = call(&h.app, reader("org-1"), "GET", "/dbroles/jobs", None, None).await;
    assert_eq!(page["items"], json!([]));
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_naming_the_field_and_stores_nothing() {
    let h = harness(&dbroles_tests::unique("h"));
    let mut wrong_type = body(LOCAL_POSTGRES_ARN);
    wrong_type["job_steps"] = json!("create-connections");
    let mut hostile = body(LOCAL_POSTGRES_ARN);
    hostile["connection_prefix_name"] = json!("x'; DROP TABLE jobs; --$(rm -rf /)");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (br#"{"agent_id": "a1b2c3d4-e5f6"#.to_vec(), "not valid JSON"),
        (wrong_type.to_string().into_bytes(), "job_steps: invalid type"),
        (hostile.to_string().into_bytes(), "connection_prefix_name:"),
        (body("arn:aws:rds:us-east-1:000000000000:db:ünïcode").to_string().into_bytes(), "aws.instance_arn:"),
    ];
    for (payload, expected) in cases {
        let (status, answer) = call(&h.app, admin("org-1"), "POST", "/dbroles/jobs", Some(&payload), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(answer["message"].as_str().unwrap().contains(expected), "{expected}: {answer}");
    }
    let missing = body("arn:aws:rds:us-east-1:000000000000:db:missing");
    let (status, answer) = create(&h.app, admin("org-1"), &missing).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(answer["message"].as_str().unwrap().starts_with("aws.instance_arn: no instance"), "{answer}");
    let big = vec![b' '; 1024 * 1024];
    let (status, _) = call(&h.app, admin("org-1"), "POST", "/dbroles/jobs", Some(&big), None).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, answer) = create(&h.app, reader("org-1"), &body(LOCAL_POSTGRES_ARN)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    let (status, answer) = create(&h.app, Err(AuthError::Missing), &body(LOCAL_POSTGRES_ARN)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    let (_, page) = call(&h.app, reader("org-1"), "GET", "/dbroles/jobs", None, None).await;
    assert_eq!(page["items"], json!([]), "nothing was stored");
}

#[tokio::test]
async fn one_running_job_per_instance_and_idempotency_keys_replay() {
    let h = harness(&dbroles_tests::unique("h"));
    let request = body(SILENT_ARN).to_string();
    let (status, first) = call(&h.app, admin("org-1"), "POST", "/dbroles/jobs", Some(request.as_bytes()), Some("key-1")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let id = first["job_id"].as_str().unwrap();

    // The same key and body (spaced differently): the same job.
    let respaced = serde_json::to_string_pretty(&body(SILENT_ARN)).unwrap();
    let (status, again) = call(&h.app, admin("org-1"), "POST", "/dbroles/jobs", Some(respaced.as_bytes()), Some("key-1")).await;
    assert_eq!((status, again["job_id"].as_str()), (StatusCode::ACCEPTED, Some(id)));
    // The same key with another body: 422.
    let other = body(LOCAL_POSTGRES_ARN).to_string();
    let (status, _) = call(&h.app, admin("org-1"), "POST", "/dbroles/jobs", Some(other.as_bytes()), Some("key-1")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // A second job for the running instance: 409 naming the running job.
    let (status, conflict) = create(&h.app, admin("org-1"), &body(SILENT_ARN)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(conflict["message"].as_str().unwrap().contains(id), "{conflict}");
    // Another organisation on the same server waits too, and learns nothing of the job.
    // The server is org-1's: another organisation is refused whether or not a job holds it.
    let (status, refused) = create(&h.app, admin("org-2"), &body(SILENT_ARN)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(refused["message"], format!("the database server {SILENT_ARN} belongs to another organisation"));

    // The silent instance times out: the job fails with a message naming the host, and the lock is released.
    let job = wait_finished(&h.app, "org-1", id).await;
    assert_eq!(job["status"]["phase"], "failed");
    assert!(job["status"]["message"].as_str().unwrap().contains("127.0.0.1"), "{job}");
    assert!(!job["completed_at"].is_null());
    // Finalize writes the status and releases the lock in one write.
    let (status, answer) = create(&h.app, admin("org-1"), &body(SILENT_ARN)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "the lock was released: {answer}");
}

#[tokio::test]
async fn fifty_parallel_creates_for_one_instance_give_exactly_one_202() {
    let h = Arc::new(harness(&dbroles_tests::unique("h")));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move { create(&h.app, admin("org-1"), &body(SILENT_ARN)).await.0 })
        })
        .collect();
    let mut accepted = 0;
    for task in tasks {
        match task.await.unwrap() {
            StatusCode::ACCEPTED => accepted += 1,
            StatusCode::CONFLICT => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(accepted, 1);
}

#[tokio::test]
async fn listing_pages_newest_first_and_rejects_bad_parameters() {
    let h = harness(&dbroles_tests::unique("h"));
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (status, created) = create(&h.app, admin("org-1"), &body(LOCAL_MARIADB_ARN)).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let id = created["job_id"].as_str().unwrap().to_string();
        wait_finished(&h.app, "org-1", &id).await;
        ids.push(id);
    }
    let (_, first) = call(&h.app, reader("org-1"), "GET", "/dbroles/jobs?limit=2", None, None).await;
    let token = first["next_token"].as_str().unwrap();
    let (_, second) =
        call(&h.app, reader("org-1"), "GET", &format!("/dbroles/jobs?limit=2&next_token={token}"), None, None).await;
    let listed: Vec<&str> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["items"].as_array().unwrap())
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    let newest_first: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    assert_eq!(listed, newest_first);
    assert!(second["next_token"].is_null());
    for bad in ["limit=0", "limit=101", "phase=done", "created_after=yesterday", "next_token=garbage"] {
        let (status, answer) = call(&h.app, reader("org-1"), "GET", &format!("/dbroles/jobs?{bad}"), None, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {answer}");
    }
    let (status, _) = call(&h.app, reader("org-2"), "GET", &format!("/dbroles/jobs?next_token={token}"), None, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a token of another organisation");
}

#[tokio::test]
async fn cancel_stops_a_running_job_and_delete_forgets_a_finished_one() {
    let h = harness(&dbroles_tests::unique("h"));
    let (_, created) = create(&h.app, admin("org-1"), &body(SILENT_ARN)).await;
    let id = created["job_id"].as_str().unwrap();
    let (status, answer) = call(&h.app, admin("org-1"), "DELETE", &format!("/dbroles/jobs/{id}"), None, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    let (status, _) = call(&h.app, reader("org-1"), "POST", &format!("/dbroles/jobs/{id}/cancel"), None, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(&h.app, admin("org-2"), "POST", &format!("/dbroles/jobs/{id}/cancel"), None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another organisation's job");

    let (status, job) = call(&h.app, admin("org-1"), "POST", &format!("/dbroles/jobs/{id}/cancel"), None, None).await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(job["status"]["phase"], "failed");
    assert_eq!(job["status"]["message"], "cancelled by alice");
    assert!(!job["completed_at"].is_null());
    let (status, answer) = call(&h.app, admin("org-1"), "POST", &format!("/dbroles/jobs/{id}/cancel"), None, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    // Stopping the local execution waited for its end: the lock is free, a new job starts at once.
    let (status, answer) = create(&h.app, admin("org-1"), &body(SILENT_ARN)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let (status, stats) = call(&h.app, reader("org-1"), "GET", "/dbroles/jobs/stats", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let expected =
        json!({"total_count": 2, "by_phase": {"running": 1, "failed": 1, "completed": 0}, "by_engine": {"postgres": 2}});
    assert_eq!(stats, expected);
    // The cancelled task is gone: the job stays as cancelled, not overwritten by a late finish.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (_, job) = call(&h.app, reader("org-1"), "GET", &format!("/dbroles/jobs/{id}"), None, None).await;
    assert_eq!(job["status"]["message"], "cancelled by alice");

    let (status, answer) = call(&h.app, admin("org-1"), "DELETE", &format!("/dbroles/jobs/{id}"), None, None).await;
    assert_eq!((status, answer), (StatusCode::NO_CONTENT, Value::Null));
    let (status, _) = call(&h.app, reader("org-1"), "GET", &format!("/dbroles/jobs/{id}"), None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&h.app, admin("org-1"), "DELETE", &format!("/dbroles/jobs/{id}"), None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn resources_round_trip_and_never_return_secrets() {
    let h = harness(&dbroles_tests::unique("h"));
    let resource = json!({
        "name": "orders-db", "type": "database", "agent_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
        "env_vars": {"HOST": "orders.example.com"},
        "roles": [{"name": "orders-ro", "type": "database", "subtype": "postgres",
                   "secret": {"envvar:PASSWORD": "never-shown-1"}, "connection_tags": {"dbroles/db-arn": "arn:x"}}]
    });
    let post = |value: &Value| value.to_string().into_bytes();
    let (status, created) = call(&h.app, admin("org-1"), "POST", "/resources", Some(&post(&resource)), None).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["subtype"], "database", "subtype defaults to type");
    assert_eq!(created["roles"][0]["secret"], json!({}));
    assert_eq!(created["roles"][0]["resource_name"], "orders-db");
    let role_id = created["roles"][0]["id"].clone();
    let (status, _) = call(&h.app, admin("org-1"), "POST", "/resources", Some(&post(&resource)), None).await;
    assert_eq!(status, StatusCode::CONFLICT);

    let mut changed = resource.clone();
    changed["env_vars"]["PORT"] = "5433".into();
    let (status, updated) = call(&h.app, admin("org-1"), "PUT", "/resources/orders-db", Some(&post(&changed)), None).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["roles"][0]["id"], role_id, "a role keeps its id");
    assert_eq!(updated["env_vars"]["PORT"], "5433");
    let (status, answer) = call(&h.app, admin("org-1"), "PUT", "/resources/other", Some(&post(&changed)), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");

    for (uri, caller) in [("/resources/orders-db", reader("org-1")), ("/resources", reader("org-1"))] {
        let (status, shown) = call(&h.app, caller, "GET", uri, None, None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(!shown.to_string().contains("never-shown"), "{shown}");
        assert!(shown.to_string().contains("orders-ro"));
    }
    let (status, _) = call(&h.app, reader("org-2"), "GET", "/resources/orders-db", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let mut bad = resource.clone();
    bad["roles"][0]["name"] = "a role; DROP".into();
    let (status, answer) = call(&h.app, admin("org-1"), "POST", "/resources", Some(&post(&bad)), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer["message"].as_str().unwrap().starts_with("roles[0].name:"), "{answer}");
    let (status, _) = call(&h.app, admin("org-1"), "DELETE", "/resources/orders-db", None, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(&h.app, admin("org-1"), "DELETE", "/resources/orders-db", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_openapi_document_covers_every_route() {
    let h = harness(&dbroles_tests::unique("h"));
    let (status, document) = call(&h.app, reader("org-1"), "GET", "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let paths = document["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/dbroles/jobs", &["post", "get"][..]),
        ("/dbroles/jobs/stats", &["get"]),
        ("/dbroles/jobs/{id}", &["get", "delete"]),
        ("/dbroles/jobs/{id}/cancel", &["post"]),
        ("/resources", &["post", "get"]),
        ("/resources/{name}", &["get", "put", "delete"]),
    ] {
        for method in methods {
            assert!(paths[path][method].is_object(), "{method} {path} missing");
        }
    }
    let schemas = &document["components"]["schemas"];
    for schema in ["Job", "JobStatus", "RoleResult", "CredentialsInfo", "HookStatus", "CreateJobRequest", "ResourceView"] {
        assert!(schemas[schema].is_object(), "schema {schema} missing");
    }
    assert_eq!(schemas["Phase"]["enum"], json!(["running", "failed", "completed"]));
}

/// A workflow that starts nothing: the API alone under load.
#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_parallel_creates_for_distinct_instances_are_all_listed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap());
    let arns: Vec<String> = (0..200).map(|i| format!("arn:aws:rds:us-east-1:000000000000:db:many-{i}")).collect();
    let instances =
        arns.iter().map(|arn| LocalInstance::on_loopback(arn, "postgres", 5432, "postgres").tagged_for("org-1")).collect();
    let workflow = Arc::new(dbroles_tests::Held::default());
    // A share large enough for the 200 jobs that stay running.
    let settings = Settings {
        accounts: AccountPolicy { home_orgs: vec!["org-1".into()], role_name: None, ..Default::default() },
        org_concurrency: 1000,
        ..Settings::default()
    };
    let deps = dbroles_core::wiring::local(store, Arc::new(LocalInventory::new(instances).unwrap()), settings);
    let app = Arc::new(App::new(&deps, workflow.clone()));
    let tasks: Vec<_> = arns
        .iter()
        .map(|arn| {
            let (app, body) = (app.clone(), body(arn));
            tokio::spawn(async move { create(&app, admin("org-1"), &body).await })
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for task in tasks {
        let (status, created) = task.await.unwrap();
        assert_eq!(status, StatusCode::ACCEPTED, "{created}");
        ids.insert(created["job_id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 200);
    assert_eq!(workflow.started.lock().unwrap().len(), 200, "every job's workflow started");
    let mut listed = std::collections::BTreeSet::new();
    let mut uri = "/dbroles/jobs?limit=100".to_string();
    loop {
        let (status, page) = call(&app, reader("org-1"), "GET", &uri, None, None).await;
        assert_eq!(status, StatusCode::OK);
        // Counted on the first page and carried by the token to the next.
        assert_eq!(page["total_count"], 200);
        for job in page["items"].as_array().unwrap() {
            assert_eq!(job["status"]["phase"], "running");
            listed.insert(job["id"].as_str().unwrap().to_string());
        }
        match page["next_token"].as_str() {
            Some(token) => uri = format!("/dbroles/jobs?limit=100&next_token={token}"),
            None => break,
        }
    }
    assert_eq!(listed, ids);

    // A client that does not page sees every job, and the count of all of them.
    let (_, all) = call(&app, reader("org-1"), "GET", "/dbroles/jobs", None, None).await;
    let all_ids: std::collections::BTreeSet<String> =
        all["items"].as_array().unwrap().iter().map(|job| job["id"].as_str().unwrap().to_string()).collect();
    assert_eq!((all_ids, all["total_count"].as_u64(), all["next_token"].clone()), (ids.clone(), Some(200), Value::Null));
    // One that pages by number (seed 004's page.start and page.limit) gets that slice.
    let (_, page) = call(&app, reader("org-1"), "GET", "/dbroles/jobs?start=101&limit=100", None, None).await;
    let newest: Vec<&Value> = all["items"].as_array().unwrap().iter().collect();
    assert_eq!(page["items"].as_array().unwrap().first(), Some(newest[100]));
    assert_eq!((page["items"].as_array().unwrap().len(), page["total_count"].as_u64()), (100, Some(200)));
    let (status, answer) = call(&app, reader("org-1"), "GET", "/dbroles/jobs?start=2&next_token=x", None, None).await;
    assert_eq!(
        (status, answer["message"].as_str()),
        (StatusCode::BAD_REQUEST, Some("start, next_token: page by one or the other"))
    );
    // A start past the bound, however large, is a 400, not an overflow or an empty query.
    for start in ["10001", "18446744073709551615", "99999999999999999999999"] {
        let uri = format!("/dbroles/jobs?start={start}&limit=100");
        let (status, answer) = call(&app, reader("org-1"), "GET", &uri, None, None).await;
        assert_eq!((status, answer["message"].as_str()), (StatusCode::BAD_REQUEST, Some("start: expected 1 to 10000")));
    }
    let (_, deep) = call(&app, reader("org-1"), "GET", "/dbroles/jobs?start=10000&limit=100", None, None).await;
    assert_eq!((deep["items"].as_array().unwrap().len(), deep["total_count"].as_u64()), (0, Some(200)));
}

/// A workflow whose start always fails (Step Functions throttling, say).
struct Unstartable;

#[async_trait::async_trait]
impl dbroles_core::workflow::Workflow for Unstartable {
    fn execution_id(&self, job_id: &str) -> String {
        format!("unstartable:{job_id}")
    }

    fn fleet_execution_id(&self, fleet_job_id: &str) -> Option<String> {
        Some(format!("unstartable:{fleet_job_id}"))
    }

    async fn start(&self, _record: &dbroles_core::model::job::JobRecord) -> Result<(), dbroles_core::workflow::WorkflowError> {
        Err(dbroles_core::workflow::WorkflowError("ThrottlingException: rate exceeded".into()))
    }

    async fn start_fleet(
        &self,
        _record: &dbroles_core::model::fleet::FleetRecord,
    ) -> Result<(), dbroles_core::workflow::WorkflowError> {
        Err(dbroles_core::workflow::WorkflowError("ThrottlingException: rate exceeded".into()))
    }

    async fn stop(&self, _execution: &str, _cause: &str) -> Result<(), dbroles_core::workflow::WorkflowError> {
        Ok(())
    }

    async fn execution_state(
        &self,
        _execution: &str,
    ) -> Result<dbroles_core::workflow::ExecutionState, dbroles_core::workflow::WorkflowError> {
        Ok(dbroles_core::workflow::ExecutionState::Missing)
    }
}

#[tokio::test]
async fn a_workflow_that_cannot_start_fails_the_job_with_a_5xx_and_no_job_stays_running() {
    let h = harness(&dbroles_tests::unique("h"));
    let app = App { workflow: Arc::new(Unstartable), ..h.app };
    let (status, answer) = create(&app, admin("org-1"), &body(LOCAL_POSTGRES_ARN)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(message.contains("the workflow could not be started: ThrottlingException"), "{message}");
    let (_, page) = call(&app, reader("org-1"), "GET", "/dbroles/jobs", None, None).await;
    let jobs = page["items"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "the job is kept, failed: {page}");
    assert_eq!(jobs[0]["status"]["phase"], "failed");
    assert!(message.contains(jobs[0]["id"].as_str().unwrap()), "the answer names the job");
    // The lock was released with it.
    let (status, _) = create(&app, admin("org-1"), &body(LOCAL_POSTGRES_ARN)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn hostile_vault_folders_and_folders_outside_the_deployments_get_a_400_and_store_nothing() {
    let mut h = harness(&dbroles_tests::unique("h"));
    let with_vault = |secret_id: &str| {
        let mut request = body(LOCAL_POSTGRES_ARN);
        request["vault_provider"] = json!({ "secret_id": secret_id });
        request
    };
    let (status, answer) = create(&h.app, admin("org-1"), &with_vault("kv/data/dbroles/")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("this deployment has no Vault"), "{answer}");

    h.app.deps.settings.vault = Some(dbroles_core::config::VaultPolicy { mount: Some("kv".into()), prefix: "dbroles/".into() });
    for (secret_id, expected) in [
        ("kv/data/dbroles/../other/", "must be plain names"),
        ("kv/data/dbroles/a#b/", "must be plain names"),
        ("kv/data/dbroles/a?version=1/", "must be plain names"),
        ("kv/data/dbroles/%2e%2e/", "must be plain names"),
        ("kv/data/dbroles//a/", "must be plain names"),
        ("kv/data/dbroles/a", "must be a folder ending with '/'"),
        ("kv/data/elsewhere/", "must be a folder under kv/data/dbroles/"),
        ("secret/data/dbroles/", "keeps credentials in the mount kv"),
    ] {
        let (status, answer) = create(&h.app, admin("org-1"), &with_vault(secret_id)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{secret_id}: {answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.starts_with("vault_provider.secret_id") && message.contains(expected), "{secret_id}: {message}");
    }
    let (_, page) = call(&h.app, reader("org-1"), "GET", "/dbroles/jobs", None, None).await;
    assert_eq!(page["items"], json!([]), "nothing was stored");
}

#[tokio::test]
async fn alternating_jobs_name_the_login_consumers_use_and_their_connections_follow_it() {
    let prefix = dbroles_tests::unique("alt");
    let h = harness(&prefix);
    let mut request = body(LOCAL_POSTGRES_ARN);
    request["aws"]["rotation"] = json!("sometimes");
    let (status, answer) = create(&h.app, admin("org-1"), &request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer["message"].as_str().unwrap().starts_with("aws.rotation: unknown variant `sometimes`"), "{answer}");
    // `<prefix>_ddl` fits PostgreSQL's 63 bytes, `<prefix>_ddl_alt` does not.
    let long = harness(&"p".repeat(56));
    let mut request = body(LOCAL_POSTGRES_ARN);
    request["aws"]["rotation"] = json!("alternating");
    let (status, answer) = create(&long.app, admin("org-1"), &request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains(&format!("{}_ddl_alt", "p".repeat(56))), "{answer}");

    let mut request = body(LOCAL_POSTGRES_ARN);
    request["aws"]["rotation"] = json!("alternating");
    request["job_steps"] = json!(["create-connections"]);
    for login in [format!("{prefix}_ro"), format!("{prefix}_ro_alt")] {
        let (status, created) = create(&h.app, admin("org-1"), &request).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{created}");
        let job = wait_finished(&h.app, "org-1", created["job_id"].as_str().unwrap()).await;
        assert_eq!(job["status"]["phase"], "completed", "{job}");
        let ro = &job["status"]["result"][0];
        assert_eq!((ro["user_role"].as_str(), ro["active_login"].as_str()), (Some(&*format!("{prefix}_ro")), Some(&*login)));
        assert!(ro["message"].as_str().unwrap().ends_with(&format!("consumers log in as {login}")), "{ro}");
    }
    // The connection reads the user from the store, as it does the password.
    let resource = h.app.deps.resources.get_resource("org-1", "postgres").await.unwrap().expect("the resource");
    let decode =
        |value: &str| String::from_utf8(base64::Engine::decode(&base64::engine::general_purpose::STANDARD, value).unwrap());
    let user = decode(&resource.roles[0].input.secret["envvar:USER"]).unwrap();
    let stored_id = user.strip_prefix("_dbroles:").and_then(|id| id.strip_suffix(":USER")).expect("a reference").to_string();
    let stored = h.app.deps.secrets.read(&stored_id).await.unwrap().expect("the referenced credentials");
    assert_eq!(stored.user, format!("{prefix}_ro_alt"));
    let login = dbroles_tests::pg_connect(5432, &stored.user, secrecy::ExposeSecret::expose_secret(&stored.password), "postgres");
    login.await.expect("the login the connection names logs in");
}

#[tokio::test]
async fn a_revoke_job_retires_the_roles_their_credentials_and_their_connections() {
    let prefix = dbroles_tests::unique("rv");
    let h = harness(&prefix);
    let mut request = body(LOCAL_POSTGRES_ARN);
    request["mode"] = json!("retire");
    let (status, answer) = create(&h.app, admin("org-1"), &request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer["message"].as_str().unwrap().starts_with("mode: unknown variant `retire`"), "{answer}");

    request["mode"] = json!("run");
    request["job_steps"] = json!(["create-connections"]);
    let (_, created) = create(&h.app, admin("org-1"), &request).await;
    let job = wait_finished(&h.app, "org-1", created["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"]["phase"], "completed", "{job}");
    assert!(h.app.deps.resources.get_resource("org-1", "postgres").await.unwrap().is_some(), "connections were made");
    // The own store's id: `<org>/<server ARN>/<role>`.
    let ro = format!("org-1/{LOCAL_POSTGRES_ARN}/{prefix}_ro");
    assert!(h.app.deps.secrets.read(&ro).await.unwrap().is_some(), "credentials were stored");
    let provisioned = || h.app.deps.jobs.get_provisioned("org-1", LOCAL_POSTGRES_ARN);
    assert!(provisioned().await.unwrap().is_some(), "the rotation schedule knows the instance");

    // A revoke retires only the levels of its scope.
    request["mode"] = json!("revoke");
    request["scope"] = json!({"levels": ["ro"]});
    let (_, created) = create(&h.app, admin("org-1"), &request).await;
    let job = wait_finished(&h.app, "org-1", created["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"]["result"].as_array().unwrap().len(), 1, "{job}");
    assert_eq!(job["status"]["phase"], "completed", "{job}");
    assert!(h.app.deps.secrets.read(&ro).await.unwrap().is_none(), "ro is retired");
    let rw = format!("org-1/{LOCAL_POSTGRES_ARN}/{prefix}_rw");
    assert!(h.app.deps.secrets.read(&rw).await.unwrap().is_some(), "rw is left as it was");
    let resource = h.app.deps.resources.get_resource("org-1", "postgres").await.unwrap().expect("the others' connections");
    let names: Vec<&str> = resource.roles.iter().map(|role| role.input.name.as_str()).collect();
    assert_eq!(names, ["prod-postgres-rw", "prod-postgres-ddl"], "ro's connection went with it");

    request["scope"] = json!({});
    let (status, created) = create(&h.app, admin("org-1"), &request).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let job = wait_finished(&h.app, "org-1", created["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"]["phase"], "completed", "{job}");
    let results = job["status"]["result"].as_array().unwrap();
    assert!(results[0]["message"].as_str().unwrap().contains("does not exist: nothing to retire"), "ro went before: {job}");
    for result in &results[1..] {
        let message = result["message"].as_str().unwrap();
        assert!(message.contains("retired") && message.contains("stored credentials are deleted"), "{message}");
        assert!(message.ends_with("its connection in the resource postgres is removed"), "{message}");
    }
    assert!(h.app.deps.resources.get_resource("org-1", "postgres").await.unwrap().is_none(), "no connection is left");
    assert!(h.app.deps.secrets.read(&ro).await.unwrap().is_none(), "no stored credentials");
    assert!(provisioned().await.unwrap().is_none(), "the rotation schedule no longer provisions it");
    let su = dbroles_tests::pg_connect(5432, "postgres", "", "postgres").await.unwrap();
    let pattern = format!("{prefix}\\_%");
    let left = su.query("SELECT rolname FROM pg_roles WHERE rolname LIKE $1", &[&pattern]).await.unwrap();
    assert!(left.is_empty(), "no role is left");
}

#[tokio::test]
async fn a_plan_job_lists_what_a_run_would_change_and_changes_nothing() {
    let prefix = dbroles_tests::unique("pj");
    let h = harness(&prefix);
    let mut request = body(LOCAL_POSTGRES_ARN);
    request["job_steps"] = json!(["create-connections"]);
    request["mode"] = json!("plan");
    let (status, created) = create(&h.app, admin("org-1"), &request).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let job = wait_finished(&h.app, "org-1", created["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"]["phase"], "completed", "{job}");
    let message = job["status"]["message"].as_str().unwrap();
    assert_eq!(message, format!("drifted: a run would change {prefix}_ro, {prefix}_rw, {prefix}_ddl"));
    let ro = &job["status"]["result"][0];
    let changes: Vec<&str> = ro["changes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert!(changes.contains(&&*format!("create role {prefix}_ro")), "{changes:?}");
    assert!(changes.contains(&"password: no stored credentials"), "{changes:?}");
    assert!(changes.iter().any(|c| c.starts_with("grant CONNECT on database postgres")), "{changes:?}");
    // Nothing changed: no role, no credentials, no connection, no rotation.
    let su = dbroles_tests::pg_connect(5432, "postgres", "", "postgres").await.unwrap();
    let pattern = format!("{prefix}\\_%");
    assert!(su.query("SELECT 1 FROM pg_roles WHERE rolname LIKE $1", &[&pattern]).await.unwrap().is_empty(), "no role");
    let ro_secret = format!("org-1/{LOCAL_POSTGRES_ARN}/{prefix}_ro");
    assert!(h.app.deps.secrets.read(&ro_secret).await.unwrap().is_none(), "nothing stored");
    assert!(h.app.deps.resources.get_resource("org-1", "postgres").await.unwrap().is_none(), "no connection");
    assert!(h.app.deps.jobs.get_provisioned("org-1", LOCAL_POSTGRES_ARN).await.unwrap().is_none(), "not provisioned");

    // After a run, a plan finds nothing to change.
    request["mode"] = json!("run");
    let (_, created) = create(&h.app, admin("org-1"), &request).await;
    let job = wait_finished(&h.app, "org-1", created["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"]["phase"], "completed", "{job}");
    request["mode"] = json!("plan");
    let (_, created) = create(&h.app, admin("org-1"), &request).await;
    let job = wait_finished(&h.app, "org-1", created["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"]["message"], "in sync: a run would change nothing", "{job}");
    for result in job["status"]["result"].as_array().unwrap() {
        assert_eq!(result["changes"], json!([]), "{result}");
    }

    // Retire what the run made (the shared server is left as it was found).
    request["mode"] = json!("revoke");
    let (_, created) = create(&h.app, admin("org-1"), &request).await;
    let job = wait_finished(&h.app, "org-1", created["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"]["phase"], "completed", "{job}");
}

#[tokio::test]
async fn a_scope_is_checked_field_by_field_and_mysql_has_no_schemas() {
    let h = harness(&dbroles_tests::unique("sc"));
    let cases = [
        (json!({"levels": ["ro", "admin"]}), LOCAL_POSTGRES_ARN, "scope.levels[1]: unknown variant `admin`"),
        (json!({"databases": {"include": [""]}}), LOCAL_POSTGRES_ARN, "scope.databases.include: '' must be 1 to 128"),
        (json!({"schemas": {"exclude": ["audit"]}}), LOCAL_MARIADB_ARN, "scope.schemas: MySQL and MariaDB have no schemas"),
    ];
    for (scope, arn, expected) in cases {
        let mut request = body(arn);
        request["scope"] = scope;
        let (status, answer) = create(&h.app, admin("org-1"), &request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(answer["message"].as_str().unwrap().starts_with(expected), "{expected}: {answer}");
    }
    let (_, page) = call(&h.app, reader("org-1"), "GET", "/dbroles/jobs", None, None).await;
    assert_eq!(page["items"], json!([]), "nothing was stored");
}
