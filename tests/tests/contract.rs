//! The API contract, checked from outside: schemathesis fuzzes the server against
//! its own OpenAPI document, and every answer of a real session decodes with types
//! that mirror hoop.dev's Go client (`gateway/api/openapi/types.go`): RFC 3339
//! times, integers, and enums inside hoop.dev's sets.

use std::sync::Arc;

use chrono::{DateTime, FixedOffset};
use dbroles_core::auth::{LocalTokens, ADMIN_GROUP};
use dbroles_core::config::VaultSettings;
use dbroles_core::deps::App;
use dbroles_core::executor::Executor;
use dbroles_core::executor::Local;
use dbroles_core::inventory::local::{LocalInstance, LocalInventory, LOCAL_POSTGRES_ARN};
use dbroles_core::model::account::AccountPolicy;
use dbroles_core::store::sqlite::SqliteStore;
use dbroles_tests::*;
use serde::Deserialize;

/// The local server on a free port, as `dbroles serve` runs it: its address and an admin's token.
async fn serve(prefix: &str) -> (String, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap());
    let instances = vec![LocalInstance::on_loopback(LOCAL_POSTGRES_ARN, "postgres", 5432, "postgres").tagged_for(ORG)];
    let settings = dbroles_core::config::Settings {
        accounts: AccountPolicy { home_orgs: vec![ORG.into()], role_name: None, ..Default::default() },
        vault: Some(dbroles_core::config::VaultPolicy { mount: None, prefix: String::new() }),
        ..settings(prefix)
    };
    let mut deps = dbroles_core::wiring::local(store, Arc::new(LocalInventory::new(instances).unwrap()), settings);
    // A Vault nobody answers: jobs naming a Vault folder are accepted, and fail when they run.
    deps.vault =
        Some(VaultSettings { address: "http://127.0.0.1:9".into(), token: "unused".to_string().into(), namespace: None });
    let app = App::new(&deps, Arc::new(Local::new(Executor::provision(0.01), deps.clone())));
    let tokens = LocalTokens::new(vec![7; 32]);
    let token = tokens.issue("contract", ORG, &[ADMIN_GROUP.to_string()], chrono::Duration::hours(1));
    let router = dbroles_core::api::authenticated(dbroles_core::api::router(Arc::new(app)), move |parts| {
        tokens.verify(parts.headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (address, token, dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_nothing() {
    let schemathesis = std::env::var("DBROLES_TEST_SCHEMATHESIS")
        .expect("DBROLES_TEST_SCHEMATHESIS is not set: run the tests with scripts/test, which installs schemathesis");
    let prefix = unique("c");
    let _leaves = Leaves::new().prefix(&prefix);
    let (address, token, _dir) = serve(&prefix).await;
    let config = path_of("tests/schemathesis.toml");
    let output = tokio::process::Command::new(schemathesis)
        .arg("--config-file")
        .arg(config)
        .args(["run", &format!("{address}/openapi.json"), "--checks", "all", "--max-examples", "20"])
        .args(["--generation-deterministic", "--header", &format!("Authorization: Bearer {token}")])
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "schemathesis found failures:\n{report}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(report.contains(" passed"), "{report}");
}

// hoop.dev's client types, as its OpenAPI types declare them (seed 001).

#[derive(Debug, Deserialize)]
struct DbRoleJob {
    id: String,
    org_id: String,
    created_at: DateTime<FixedOffset>,
    completed_at: Option<DateTime<FixedOffset>>,
    spec: Option<AwsDbRoleJobSpec>,
    status: Option<DbRoleJobStatus>,
    hook_status: Option<DbRoleJobHookStatus>,
}

#[derive(Debug, Deserialize)]
struct AwsDbRoleJobSpec {
    account_arn: String,
    db_arn: String,
    db_engine: String,
    db_name: String,
    db_tags: Vec<DbTag>,
}

#[derive(Debug, Deserialize)]
struct DbTag {
    key: String,
    value: String,
}

/// hoop.dev's phases: `running`, `failed`, `completed`.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum HoopPhase {
    Running,
    Failed,
    Completed,
}

#[derive(Debug, Deserialize)]
struct DbRoleJobStatus {
    phase: HoopPhase,
    message: String,
    result: Vec<DbRoleJobStatusResult>,
}

#[derive(Debug, Deserialize)]
struct DbRoleJobStatusResult {
    user_role: String,
    status: HoopPhase,
    message: String,
    completed_at: DateTime<FixedOffset>,
    credentials_info: CredentialsInfo,
}

/// hoop.dev's `SecretsManagerProviderType`: `database`, `vault`.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum HoopProvider {
    Database,
    Vault,
}

#[derive(Debug, Deserialize)]
struct CredentialsInfo {
    secret_id: String,
    secret_keys: Vec<String>,
    secrets_manager_provider: HoopProvider,
}

#[derive(Debug, Deserialize)]
struct DbRoleJobHookStatus {
    exit_code: i64,
    output: String,
    execution_time_sec: i64,
}

#[derive(Debug, Deserialize)]
struct CreateDbRoleJobResponse {
    job_id: String,
}

#[derive(Debug, Deserialize)]
struct ResourceResponse {
    id: String,
    name: String,
    #[serde(rename = "type")]
    kind: String,
    subtype: String,
    agent_id: String,
    env_vars: std::collections::BTreeMap<String, String>,
    created_at: DateTime<FixedOffset>,
    updated_at: DateTime<FixedOffset>,
}

#[derive(Debug, Deserialize)]
struct Pagination {
    total: i64,
    page: i64,
    size: i64,
}

#[derive(Debug, Deserialize)]
struct PaginatedResources {
    pages: Pagination,
    data: Vec<ResourceResponse>,
}

#[derive(Debug, Deserialize)]
struct HttpError {
    message: String,
}

/// A session as hoop.dev's clients have it, each answer decoded with hoop.dev's types.
#[tokio::test(flavor = "multi_thread")]
async fn every_answer_decodes_with_hoop_devs_types() {
    let prefix = unique("c");
    let _leaves = Leaves::new().prefix(&prefix);
    let (address, token, _dir) = serve(&prefix).await;
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, body: Option<serde_json::Value>| {
        let mut request = http.request(method, format!("{address}/api{path}")).bearer_auth(&token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let decode = |what: &str, text: &str| -> serde_json::Value {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: {e}: {text}"))
    };

    let job = serde_json::json!({"agent_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890", "aws": {"instance_arn": LOCAL_POSTGRES_ARN},
                                 "connection_prefix_name": "pg-", "job_steps": ["create-connections"]});
    let (status, text) = call(reqwest::Method::POST, "/dbroles/jobs", Some(job)).await;
    assert_eq!(status, 202, "{text}");
    let created: CreateDbRoleJobResponse = serde_json::from_str(&text).unwrap();
    let finished = loop {
        let (status, text) = call(reqwest::Method::GET, &format!("/dbroles/jobs/{}", created.job_id), None).await;
        assert_eq!(status, 200);
        let job: DbRoleJob = serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET /dbroles/jobs/{{id}}: {e}: {text}"));
        if job.status.as_ref().is_some_and(|s| s.phase != HoopPhase::Running) {
            break job;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!((finished.id.as_str(), finished.org_id.as_str()), (created.job_id.as_str(), ORG));
    let status = finished.status.as_ref().unwrap();
    assert_eq!(status.phase, HoopPhase::Completed, "{}", status.message);
    assert!(finished.completed_at.unwrap() >= finished.created_at);
    let spec = finished.spec.as_ref().unwrap();
    assert_eq!((spec.db_arn.as_str(), spec.db_engine.as_str()), (LOCAL_POSTGRES_ARN, "postgres"));
    assert!(
        spec.account_arn.starts_with("arn:aws:iam::000000000000:")
            && spec.db_name.is_empty()
            && spec.db_tags.iter().all(|t| !t.key.is_empty() && !t.value.is_empty())
    );
    for result in &status.result {
        assert_eq!(
            (result.status == HoopPhase::Completed, result.credentials_info.secrets_manager_provider == HoopProvider::Database),
            (true, true)
        );
        assert!(
            result.user_role.starts_with(&prefix) && !result.message.is_empty() && result.completed_at >= finished.created_at
        );
        assert!(result.credentials_info.secret_id.is_empty() && result.credentials_info.secret_keys.is_empty());
    }
    if let Some(hook) = &finished.hook_status {
        assert!(hook.exit_code >= 0 && hook.execution_time_sec >= 0, "{}", hook.output);
    }

    // The listing and the stats, as the CLI reads them.
    let (_, text) = call(reqwest::Method::GET, "/dbroles/jobs", None).await;
    let list = decode("GET /dbroles/jobs", &text);
    let items: Vec<DbRoleJob> = serde_json::from_value(list["items"].clone()).unwrap();
    assert_eq!(items.len(), 1);
    assert!(list["total_count"].is_u64(), "{list}");
    let (_, text) = call(reqwest::Method::GET, "/dbroles/jobs/stats", None).await;
    assert!(decode("stats", &text)["total_count"].is_u64());

    // Resources: the one create-connections made, as an array and paged.
    let (_, text) = call(reqwest::Method::GET, "/resources", None).await;
    let resources: Vec<ResourceResponse> = serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET /resources: {e}: {text}"));
    assert_eq!(resources.len(), 1);
    let resource = &resources[0];
    assert_eq!((resource.name.as_str(), resource.kind.as_str(), resource.subtype.as_str()), ("postgres", "database", "postgres"));
    assert!(resource.updated_at >= resource.created_at && !resource.id.is_empty() && resource.env_vars.is_empty());
    assert_eq!(resource.agent_id, "a1b2c3d4-e5f6-7890-abcd-ef1234567890");
    let (_, text) = call(reqwest::Method::GET, "/resources?page=1&page_size=10", None).await;
    let paged: PaginatedResources = serde_json::from_str(&text).unwrap();
    assert_eq!((paged.pages.total, paged.pages.page, paged.pages.size, paged.data.len()), (1, 1, 10, 1));

    // Errors are hoop.dev's HTTPError.
    let (status, text) = call(reqwest::Method::GET, "/dbroles/jobs/nope", None).await;
    let error: HttpError = serde_json::from_str(&text).unwrap();
    assert_eq!((status, error.message.as_str()), (404, "no job nope"));
    drop_machine_roles(&prefix).await;
}
