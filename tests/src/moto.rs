//! moto as the tests' AWS: the shared server `scripts/test` started, a server of
//! a test's own in Step Functions execute mode (a proxy answering Lambda Invoke
//! with the step handlers, and injecting faults), and RDS instances in it.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::faults::Faults;
use crate::free_port;
use crate::web::forward_to;

/// The moto server `scripts/test` started (plain mode: executions stay RUNNING).
pub fn moto_endpoint() -> String {
    std::env::var("DBROLES_TEST_MOTO").expect("DBROLES_TEST_MOTO is not set: run the tests with scripts/test")
}

pub async fn aws_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new("testing", "testing", None, None, "tests"))
        .load()
        .await
}

/// Creates the deployment's table (`DynamoStore::create_table`) in the moto `aws` reaches.
pub async fn create_table(aws: &aws_config::SdkConfig, table: &str) {
    let store = dbroles_core::store::dynamodb::DynamoStore::new(aws_sdk_dynamodb::Client::new(aws), table);
    store.create_table().await.expect("moto creates the table");
}

/// A moto server of the test's own in Step Functions execute mode, with a proxy on
/// the port moto sends its own AWS calls to: the proxy answers Lambda `Invoke` by
/// running dbroles' step handlers in-process and forwards everything else to moto.
pub struct MotoExecutor {
    /// Where the SDK talks to moto.
    pub endpoint: String,
    /// The proxy (answers Lambda Invoke).
    pub proxy: String,
    process: std::process::Child,
    /// Every Invoke the proxy answered: the function and its payload.
    pub invocations: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
    /// Faults the proxy injects into the AWS calls it forwards.
    pub faults: Faults,
}

impl Drop for MotoExecutor {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Answers for functions that are not dbroles steps (a hook, say): function name → JSON.
pub type OtherFunctions = std::collections::HashMap<String, serde_json::Value>;

/// Deployed functions by name, and the step each runs (its `DBROLES_STEP`).
pub type DeployedFunctions = std::collections::HashMap<String, dbroles_core::steps::Step>;

impl MotoExecutor {
    /// Starts moto; `deps` builds the steps' dependencies from its endpoint and the proxy's.
    pub async fn start<F, Fut>(deps: F, others: OtherFunctions) -> Self
    where
        F: FnOnce(String, String) -> Fut,
        Fut: std::future::Future<Output = dbroles_core::deps::Deps>,
    {
        Self::launch(deps, others, DeployedFunctions::new()).await
    }

    /// As [`MotoExecutor::start`], the proxy also answering the functions a
    /// deployment named (`<stack>-ResolveFunction-<id>`) with their steps.
    pub async fn deployed<F, Fut>(deps: F, functions: DeployedFunctions) -> Self
    where
        F: FnOnce(String, String) -> Fut,
        Fut: std::future::Future<Output = dbroles_core::deps::Deps>,
    {
        Self::launch(deps, OtherFunctions::new(), functions).await
    }

    async fn launch<F, Fut>(deps: F, others: OtherFunctions, functions: DeployedFunctions) -> Self
    where
        F: FnOnce(String, String) -> Fut,
        Fut: std::future::Future<Output = dbroles_core::deps::Deps>,
    {
        let python = std::env::var("DBROLES_TEST_PYTHON").expect("DBROLES_TEST_PYTHON is not set: run scripts/test");
        let (port, proxy_port) = (free_port(), free_port());
        let log = std::fs::File::create(std::env::temp_dir().join(format!("moto-{port}.log"))).unwrap();
        let process = Command::new(python)
            .arg(crate::path_of("scripts/moto_server.py"))
            .args(["127.0.0.1", &port.to_string()])
            .env("MOTO_PORT", proxy_port.to_string())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("scripts/moto_server.py starts");
        let endpoint = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        for _ in 0..100 {
            if http.get(format!("{endpoint}/moto-api/")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        http.post(format!("{endpoint}/moto-api/config"))
            .json(&serde_json::json!({"stepfunctions": {"execute_state_machine": true}, "lambda": {"use_docker": false}}))
            .send()
            .await
            .expect("moto takes the execute-mode configuration");
        let proxy = format!("http://127.0.0.1:{proxy_port}");
        let deps = Arc::new(deps(endpoint.clone(), proxy.clone()).await);
        let invocations = Arc::new(Mutex::new(Vec::new()));
        let faults = Faults::default();
        let state = Proxy {
            deps,
            faults: faults.clone(),
            others: Arc::new(others),
            functions: Arc::new(functions),
            upstream: endpoint.clone(),
            http,
            invocations: invocations.clone(),
        };
        let router = axum::Router::new()
            .route("/2015-03-31/functions/{function}/invocations", axum::routing::post(invoke))
            .fallback(forward)
            .with_state(state);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", proxy_port)).await.expect("the proxy port is free");
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { endpoint, proxy, process, invocations, faults }
    }
}

#[derive(Clone)]
struct Proxy {
    deps: Arc<dbroles_core::deps::Deps>,
    faults: Faults,
    others: Arc<OtherFunctions>,
    functions: Arc<DeployedFunctions>,
    upstream: String,
    http: reqwest::Client,
    invocations: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
}

async fn invoke(
    axum::extract::State(proxy): axum::extract::State<Proxy>,
    axum::extract::Path(function): axum::extract::Path<String>,
    body: bytes::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let payload: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let name = function.rsplit(':').next().unwrap_or(&function).to_string();
    proxy.invocations.lock().unwrap().push((name.clone(), payload.clone()));
    proxy.faults.invoked(&name);
    if let Some(answer) = proxy.others.get(&name) {
        return axum::Json(answer.clone()).into_response();
    }
    let step = proxy.functions.get(&name).copied().or_else(|| dbroles_core::steps::Step::from_resource(&function));
    let Some(step) = step else {
        let error =
            serde_json::json!({"errorType": "ResourceNotFoundException", "errorMessage": format!("no function {function}")});
        return ([("X-Amz-Function-Error", "Unhandled")], axum::Json(error)).into_response();
    };
    match dbroles_core::steps::run(step, &proxy.deps, payload).await {
        Ok(state) => axum::Json(state).into_response(),
        Err(error) => ([("X-Amz-Function-Error", "Unhandled")], axum::Json(error.payload())).into_response(),
    }
}

async fn forward(
    axum::extract::State(proxy): axum::extract::State<Proxy>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    if let Some(answer) = proxy.faults.answer(&parts, &body) {
        return answer;
    }
    forward_to(&proxy.http, &proxy.upstream, axum::extract::Request::from_parts(parts, axum::body::Body::from(body))).await
}

/// `CreateDBInstance` in moto as the tests use it: the smallest class and a master
/// user; the caller says how the master password is kept and adds the rest.
pub fn create_instance(
    aws: &aws_config::SdkConfig,
    identifier: &str,
    engine: &str,
    master_user: &str,
) -> aws_sdk_rds::operation::create_db_instance::builders::CreateDBInstanceFluentBuilder {
    aws_sdk_rds::Client::new(aws)
        .create_db_instance()
        .db_instance_identifier(identifier)
        .engine(engine)
        .db_instance_class("db.t3.micro")
        .allocated_storage(20)
        .master_username(master_user)
}

/// An RDS instance in moto, in a VPC of its own beside one security group of the
/// application's, with its managed master secret holding `master_password`.
pub struct MotoInstance {
    pub identifier: String,
    pub arn: String,
    /// The endpoint moto gives it (map it to a real server with an endpoint override).
    pub host: String,
    pub vpc_id: String,
    /// The group it was created with.
    pub app_group: String,
}

pub async fn moto_instance(
    aws: &aws_config::SdkConfig,
    identifier: &str,
    engine: &str,
    master: (&str, &str),
    tags: &[(&str, &str)],
) -> MotoInstance {
    let ec2 = aws_sdk_ec2::Client::new(aws);
    let vpc = ec2.create_vpc().cidr_block("10.40.0.0/16").send().await.unwrap().vpc.unwrap().vpc_id.unwrap();
    let mut subnets = Vec::new();
    for (cidr, zone) in [("10.40.1.0/24", "us-east-1a"), ("10.40.2.0/24", "us-east-1b")] {
        let subnet = ec2.create_subnet().vpc_id(&vpc).cidr_block(cidr).availability_zone(zone).send().await.unwrap();
        subnets.push(subnet.subnet.unwrap().subnet_id.unwrap());
    }
    let app_group = ec2
        .create_security_group()
        .group_name(format!("app-{identifier}"))
        .description("the application's")
        .vpc_id(&vpc)
        .send()
        .await
        .unwrap()
        .group_id
        .unwrap();
    let rds = aws_sdk_rds::Client::new(aws);
    let subnet_group = format!("{identifier}-subnets");
    rds.create_db_subnet_group()
        .db_subnet_group_name(&subnet_group)
        .db_subnet_group_description("dbroles tests")
        .set_subnet_ids(Some(subnets))
        .send()
        .await
        .unwrap();
    let mut create = create_instance(aws, identifier, engine, master.0)
        .manage_master_user_password(true)
        .db_subnet_group_name(&subnet_group)
        .vpc_security_group_ids(&app_group);
    // Tagged for [`crate::ORG`] unless the test names an organisation: the home account's instances need it.
    let org_tag = (!tags.iter().any(|(key, _)| *key == "dbroles:org")).then_some(("dbroles:org", crate::ORG));
    for (key, value) in tags.iter().copied().chain(org_tag) {
        create = create.tags(aws_sdk_rds::types::Tag::builder().key(key).value(value).build());
    }
    let created = create.send().await.unwrap().db_instance.unwrap();
    aws_sdk_secretsmanager::Client::new(aws)
        .put_secret_value()
        .secret_id(created.master_user_secret.unwrap().secret_arn.unwrap())
        .secret_string(serde_json::json!({"username": master.0, "password": master.1}).to_string())
        .send()
        .await
        .unwrap();
    MotoInstance {
        identifier: identifier.to_string(),
        arn: created.db_instance_arn.unwrap(),
        host: created.endpoint.unwrap().address.unwrap(),
        vpc_id: vpc,
        app_group,
    }
}

/// The provisioning state machine in moto: the one definition, its substitutions
/// naming the step functions `dbroles-<step>` (which the proxy answers). Its ARN.
pub async fn provision_state_machine(aws: &aws_config::SdkConfig) -> String {
    use dbroles_core::steps::Step;
    let mut definition = dbroles_core::executor::PROVISION_DEFINITION.to_string();
    for step in Step::ALL {
        let function = format!("arn:aws:lambda:us-east-1:123456789012:function:dbroles-{}", step.name());
        definition = definition.replace(&format!("${{{}}}", step.substitution()), &function);
    }
    aws_sdk_sfn::Client::new(aws)
        .create_state_machine()
        .name(crate::unique("provision-"))
        .definition(definition)
        .role_arn("arn:aws:iam::123456789012:role/dbroles-states")
        .send()
        .await
        .unwrap()
        .state_machine_arn
}

/// The own store as a deployment keeps it on AWS: each credential encrypted under a KMS key of moto's.
pub async fn own_store_on_kms(aws: &aws_config::SdkConfig) -> dbroles_core::config::CredentialsStore {
    let key = aws_sdk_kms::Client::new(aws).create_key().description("dbroles credentials").send().await.unwrap();
    let key = key.key_metadata.unwrap().key_id;
    dbroles_core::config::CredentialsStore::Database { key: Some(key) }
}

/// `aws` as the administrator of another account sees it (moto gives
/// AssumeRole's credentials the role's account): to set that account up.
pub async fn other_account(aws: &aws_config::SdkConfig, account: &str) -> aws_config::SdkConfig {
    use aws_credential_types::provider::SharedCredentialsProvider;
    let assumed = aws_sdk_sts::Client::new(aws)
        .assume_role()
        .role_arn(format!("arn:aws:iam::{account}:role/administrator"))
        .role_session_name("setup")
        .send()
        .await
        .unwrap()
        .credentials
        .unwrap();
    let credentials = aws_credential_types::Credentials::new(
        assumed.access_key_id(),
        assumed.secret_access_key(),
        Some(assumed.session_token().to_string()),
        None,
        "other-account",
    );
    aws.to_builder().credentials_provider(SharedCredentialsProvider::new(credentials)).build()
}

/// A role `name` in `account` that the deployment (moto's 123456789012) may
/// assume, with `external_id` as its trust policy's `sts:ExternalId` condition
/// (none: anyone who knows its ARN), made by that account's administrator: its
/// ARN. The tests' moto honours the condition (`scripts/moto_server.py`).
pub async fn trusting_role(aws: &aws_config::SdkConfig, account: &str, name: &str, external_id: Option<&str>) -> String {
    let mut statement = serde_json::json!({
        "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "sts:AssumeRole"
    });
    if let Some(id) = external_id {
        statement["Condition"] = serde_json::json!({"StringEquals": {"sts:ExternalId": id}});
    }
    let policy = serde_json::json!({"Version": "2012-10-17", "Statement": [statement]}).to_string();
    let iam = aws_sdk_iam::Client::new(&other_account(aws, account).await);
    match iam.create_role().role_name(name).assume_role_policy_document(policy).send().await {
        Ok(_) => {}
        Err(error) if error.as_service_error().is_some_and(|e| e.is_entity_already_exists_exception()) => {}
        Err(error) => panic!("creating the role {name}: {error:?}"),
    }
    format!("arn:aws:iam::{account}:role/{name}")
}

/// An Aurora cluster in moto with an RDS-managed master secret, and no instance
/// yet, tagged for [`crate::ORG`].
pub async fn create_cluster(
    aws: &aws_config::SdkConfig,
    identifier: &str,
    engine: &str,
    master_user: &str,
) -> aws_sdk_rds::types::DbCluster {
    aws_sdk_rds::Client::new(aws)
        .create_db_cluster()
        .db_cluster_identifier(identifier)
        .engine(engine)
        .master_username(master_user)
        .manage_master_user_password(true)
        .tags(aws_sdk_rds::types::Tag::builder().key("dbroles:org").value(crate::ORG).build())
        .send()
        .await
        .unwrap()
        .db_cluster
        .unwrap()
}

/// The writer instance of a cluster [`create_cluster`] made, named `<cluster>-writer`.
pub async fn create_writer(aws: &aws_config::SdkConfig, cluster: &str, engine: &str) -> aws_sdk_rds::types::DbInstance {
    create_instance(aws, &format!("{cluster}-writer"), engine, "unused")
        .db_cluster_identifier(cluster)
        .send()
        .await
        .unwrap()
        .db_instance
        .unwrap()
}
