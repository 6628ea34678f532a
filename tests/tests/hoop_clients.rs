//! hoop.dev's clients, replayed: the requests its web app, its CLI and a Go client
//! built from its OpenAPI types send, under `/api`, and their reading of the answers.

use std::sync::Arc;

use dbroles_core::auth::{AuthError, Caller};
use dbroles_core::deps::App;
use dbroles_core::inventory::local::{LocalInstance, LocalInventory, LOCAL_POSTGRES_ARN};
use dbroles_core::store::sqlite::SqliteStore;
use dbroles_tests::*;
use http::StatusCode;
use serde_json::{json, Value};

fn admin() -> Result<Caller, AuthError> {
    Ok(Caller { sub: "alice".into(), org: ORG.into(), groups: vec!["admin".into()] })
}

struct Client {
    app: App,
    _dir: tempfile::TempDir,
}

impl Client {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap());
        let instances = vec![LocalInstance::on_loopback(LOCAL_POSTGRES_ARN, "postgres", 5432, "postgres").tagged_for(ORG)];
        let deps = dbroles_core::wiring::local(store, Arc::new(LocalInventory::new(instances).unwrap()), settings("hoop"));
        Self { app: App::new(&deps, Arc::new(Held::default())), _dir: dir }
    }

    /// A request as a hoop.dev client sends it: the JSON body as written, under `/api`.
    async fn send(&self, method: &str, path: &str, body: Option<&str>) -> (StatusCode, Option<String>, Value) {
        let body = bytes::Bytes::from(body.unwrap_or_default().to_string());
        let request = http::Request::builder().method(method).uri(format!("/api{path}")).body(body).unwrap();
        let response = call_api(&self.app, admin(), request).await;
        let ignored = response.headers().get("x-dbroles-ignored-fields").map(|v| v.to_str().unwrap().to_string());
        (response.status(), ignored, serde_json::from_str(response.body()).unwrap_or(Value::Null))
    }
}

const RESOURCE: &str = r#"{
    "name": "orders-db", "type": "database", "subtype": "postgres", "agent_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
    "env_vars": {"HOST": "b3JkZXJz"},
    "roles": [{"name": "orders-ro", "type": "database", "subtype": "postgres",
               "secret": {"envvar:PASS": "czNjcjN0"}, "connection_tags": {}}]
}"#;

#[tokio::test]
async fn the_web_apps_fetch_merge_put_back_keeps_every_connection() {
    let client = Client::new();
    let (status, _, created) = client.send("POST", "/resources", Some(RESOURCE)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");

    // The web app reads the resource, changes a variable, and PUTs back all it read.
    let (status, _, mut fetched) = client.send("GET", "/resources/orders-db", None).await;
    assert_eq!(status, StatusCode::OK);
    fetched["env_vars"]["PORT"] = json!("NTQzMw==");
    let (status, ignored, updated) = client.send("PUT", "/resources/orders-db", Some(&fetched.to_string())).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["env_vars"]["PORT"], "NTQzMw==");
    let ignored = ignored.expect("the fields dbroles does not take are named");
    for field in ["id", "created_at", "updated_at", "roles[0].id", "roles[0].resource_name"] {
        assert!(ignored.split(", ").any(|f| f == field), "{field} not in {ignored}");
    }
    // The connection and its secret are as they were: the PUT never touches connections.
    let stored = client.app.deps.resources.get_resource(ORG, "orders-db").await.unwrap().unwrap();
    assert_eq!(stored.roles.len(), 1);
    assert_eq!(stored.roles[0].id, created["roles"][0]["id"].as_str().unwrap());
    assert_eq!(stored.roles[0].input.secret["envvar:PASS"], "czNjcjN0");

    // A PUT with other roles changes no connection either; a type change with connections is refused.
    let other_roles = json!({"name": "orders-db", "type": "database", "subtype": "postgres", "roles": []});
    let (status, _, answer) = client.send("PUT", "/resources/orders-db", Some(&other_roles.to_string())).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["roles"].as_array().unwrap().len(), 1);
    let retyped = json!({"name": "orders-db", "type": "database", "subtype": "mysql"});
    let (status, _, answer) = client.send("PUT", "/resources/orders-db", Some(&retyped.to_string())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(answer["message"], "type, subtype: cannot change while the resource has connections");
    // A missing resource is not created by PUT.
    let missing = json!({"name": "ledger-db", "type": "database"});
    let (status, _, _) = client.send("PUT", "/resources/ledger-db", Some(&missing.to_string())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(client.app.deps.resources.get_resource(ORG, "ledger-db").await.unwrap().is_none());
}

#[tokio::test]
async fn resources_list_as_hoop_dev_lists_them() {
    let client = Client::new();
    for (name, subtype) in [("orders-db", "postgres"), ("ledger-db", "mysql"), ("audit-db", "postgres")] {
        let body = json!({"name": name, "type": "database", "subtype": subtype, "env_vars": {}, "agent_id": ""});
        let (status, _, created) = client.send("POST", "/resources", Some(&body.to_string())).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert_eq!(created["agent_id"], "", "an unset agent_id is \"\" from Go clients");
    }
    // No paging parameter: the bare array older clients read.
    let (_, _, all) = client.send("GET", "/resources", None).await;
    let names: Vec<&str> = all.as_array().expect("a bare array").iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["audit-db", "ledger-db", "orders-db"]);
    // page and page_size: {pages: {total, page, size}, data}.
    let (_, _, paged) = client.send("GET", "/resources?page=2&page_size=2", None).await;
    assert_eq!(paged["pages"], json!({"total": 3, "page": 2, "size": 2}));
    assert_eq!(paged["data"].as_array().unwrap().len(), 1);
    assert_eq!(paged["data"][0]["name"], "orders-db");
    // The filters.
    for (query, expected) in [
        ("subtype=postgres", vec!["audit-db", "orders-db"]),
        ("name=ledger-db", vec!["ledger-db"]),
        ("search=LEDG", vec!["ledger-db"]),
    ] {
        let (_, _, found) = client.send("GET", &format!("/resources?{query}"), None).await;
        let names: Vec<&str> = found.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert_eq!(names, expected, "{query}");
    }
    let (status, _, answer) = client.send("GET", "/resources?page=0", None).await;
    assert_eq!((status, answer["message"].as_str()), (StatusCode::BAD_REQUEST, Some("page: expected 1 to 1000000000")));
}

#[tokio::test]
async fn a_go_client_sends_nulls_empty_strings_and_fields_dbroles_does_not_know() {
    let client = Client::new();
    // As a Go client built from hoop.dev's types writes a job with nothing optional set.
    let go = r#"{"agent_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
        "aws": {"instance_arn": "arn:aws:rds:us-east-1:000000000000:db:postgres", "default_security_group": null, "region": ""},
        "connection_prefix_name": "orders-", "job_steps": null, "vault_provider": null, "created_by": "cli"}"#;
    let (status, ignored, created) = client.send("POST", "/dbroles/jobs", Some(go)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    assert_eq!(ignored.as_deref(), Some("created_by"), "an unknown field is ignored and named");
    let job = client.app.deps.jobs.get_job(ORG, created["job_id"].as_str().unwrap()).await.unwrap().unwrap();
    assert!(job.request.job_steps.is_empty() && job.request.vault_provider.is_none());

    // A misspelt field is not silently dropped: the real one is missing, and the answer says which.
    let misspelt = go.replace("connection_prefix_name", "conection_prefix_name");
    let (status, _, answer) = client.send("POST", "/dbroles/jobs", Some(&misspelt)).await;
    assert_eq!(
        (status, answer["message"].as_str()),
        (StatusCode::BAD_REQUEST, Some("connection_prefix_name: is required (it is missing, null or \"\")"))
    );
    // Values are as strict as ever.
    let bad_cidr =
        go.replace("\"default_security_group\": null", "\"default_security_group\": {\"ingress_cidr\": \"10.0.0.0/33\"}");
    let (status, _, answer) = client.send("POST", "/dbroles/jobs", Some(&bad_cidr)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer["message"].as_str().unwrap().starts_with("aws.default_security_group.ingress_cidr:"), "{answer}");
    let bad_step = go.replace("\"job_steps\": null", "\"job_steps\": [\"drop-everything\"]");
    let (status, _, answer) = client.send("POST", "/dbroles/jobs", Some(&bad_step)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer["message"].as_str().unwrap().starts_with("job_steps[0]:"), "{answer}");
}

#[tokio::test]
async fn another_name_in_a_put_renames_the_resource_with_its_connections() {
    let client = Client::new();
    client.send("POST", "/resources", Some(RESOURCE)).await;
    client.send("POST", "/resources", Some(r#"{"name": "taken-db", "type": "database"}"#)).await;
    let renamed = json!({"name": "orders-main", "type": "database", "subtype": "postgres"});
    let (status, _, answer) = client.send("PUT", "/resources/orders-db", Some(&renamed.to_string())).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        (answer["name"].as_str(), answer["roles"][0]["resource_name"].as_str()),
        (Some("orders-main"), Some("orders-main"))
    );
    assert!(client.app.deps.resources.get_resource(ORG, "orders-db").await.unwrap().is_none());
    let moved = client.app.deps.resources.get_resource(ORG, "orders-main").await.unwrap().unwrap();
    assert_eq!(moved.roles[0].input.secret["envvar:PASS"], "czNjcjN0", "the connection moved with its secret");
    let onto_taken = json!({"name": "taken-db", "type": "database", "subtype": "postgres"});
    let (status, _, _) = client.send("PUT", "/resources/orders-main", Some(&onto_taken.to_string())).await;
    assert_eq!(status, StatusCode::CONFLICT);
}
