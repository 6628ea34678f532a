//! The test harness: a PostgreSQL cluster of its own (SCRAM and TLS, like RDS),
//! the machine's MariaDB, moto, and helpers to log in as a role.
//!
//! Run through `scripts/test`, which starts moto and exports its address.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
pub const SUPERUSER_PASSWORD: &str = "master-Pa55word";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("an address").port()
}

/// A name no other test uses: `t` and 8 hex digits.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// A throwaway PostgreSQL 15 cluster with `scram-sha-256` for every TCP login,
/// TLS from a CA the test made, and every statement logged.
pub struct PgCluster {
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub ca_file: PathBuf,
    pub other_ca_file: PathBuf,
}

fn run_as_postgres(args: &[&str]) -> std::process::Output {
    Command::new("runuser").arg("-u").arg("postgres").arg("--").args(args).output().expect("runuser runs")
}

impl PgCluster {
    pub fn start() -> Self {
        let dir = tempfile::Builder::new().prefix("dbroles-pg").tempdir().expect("a temp dir");
        let root = dir.path();
        let data = root.join("data");
        std::fs::write(root.join("pw"), SUPERUSER_PASSWORD).unwrap();
        let (ca_pem, cert_pem, key_pem) = certificates();
        let (other_ca, _, _) = certificates();
        std::fs::write(root.join("ca.pem"), &ca_pem).unwrap();
        std::fs::write(root.join("other-ca.pem"), &other_ca).unwrap();
        Command::new("chown").args(["-R", "postgres:postgres"]).arg(root).status().unwrap();
        let initdb = run_as_postgres(&[
            &format!("{PG_BIN}/initdb"),
            "-D",
            data.to_str().unwrap(),
            "-U",
            "postgres",
            "-A",
            "scram-sha-256",
            &format!("--pwfile={}", root.join("pw").display()),
        ]);
        assert!(initdb.status.success(), "initdb: {}", String::from_utf8_lossy(&initdb.stderr));
        std::fs::write(data.join("server.crt"), cert_pem).unwrap();
        std::fs::write(data.join("server.key"), key_pem).unwrap();
        Command::new("chown")
            .args(["postgres:postgres"])
            .arg(data.join("server.crt"))
            .arg(data.join("server.key"))
            .status()
            .unwrap();
        Command::new("chmod").args(["600"]).arg(data.join("server.key")).status().unwrap();
        let port = free_port();
        let options = format!(
            "-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c ssl=on \
             -c log_statement=all -c logging_collector=off -c max_connections=200",
            root.display()
        );
        let start = run_as_postgres(&[
            &format!("{PG_BIN}/pg_ctl"),
            "-D",
            data.to_str().unwrap(),
            "-l",
            root.join("server.log").to_str().unwrap(),
            "-o",
            &options,
            "-w",
            "start",
        ]);
        assert!(start.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&start.stderr));
        Self { port, ca_file: root.join("ca.pem"), other_ca_file: root.join("other-ca.pem"), dir }
    }

    /// Stops the server (the database goes down); `resume` starts it again on the same port.
    pub fn stop(&self) {
        let data = self.dir.path().join("data");
        let stop = run_as_postgres(&[&format!("{PG_BIN}/pg_ctl"), "-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"]);
        assert!(stop.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&stop.stderr));
    }

    pub fn resume(&self) {
        let root = self.dir.path();
        let data = root.join("data");
        let options = format!(
            "-c port={} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c ssl=on -c log_statement=all \
             -c logging_collector=off -c max_connections=200",
            self.port,
            root.display()
        );
        let log = root.join("server.log");
        let start = run_as_postgres(&[
            &format!("{PG_BIN}/pg_ctl"),
            "-D",
            data.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-o",
            &options,
            "-w",
            "start",
        ]);
        assert!(start.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&start.stderr));
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub async fn client(&self, user: &str, password: &str, db: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        pg_connect(self.port, user, password, db).await
    }

    /// The cluster as an instance of the local inventory, its superuser as the master.
    pub fn local_instance(&self, arn: &str) -> dbroles_core::inventory::local::LocalInstance {
        dbroles_core::inventory::local::LocalInstance {
            master_password: Some(SUPERUSER_PASSWORD.into()),
            ..dbroles_core::inventory::local::LocalInstance::on_loopback(arn, "postgres", self.port, "postgres")
        }
    }

    pub async fn superuser(&self, db: &str) -> tokio_postgres::Client {
        self.client("postgres", SUPERUSER_PASSWORD, db).await.expect("the superuser logs in")
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        run_as_postgres(&[
            &format!("{PG_BIN}/pg_ctl"),
            "-D",
            self.dir.path().join("data").to_str().unwrap(),
            "-m",
            "immediate",
            "stop",
        ]);
    }
}

pub async fn pg_connect(
    port: u16,
    user: &str,
    password: &str,
    db: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user(user)
        .password(password)
        .dbname(db)
        .connect_timeout(Duration::from_secs(5))
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(connection);
    Ok(client)
}

/// A CA, and a server certificate it signed for 127.0.0.1 and localhost (PEM).
fn certificates() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "dbroles test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let ca_pem = ca.pem();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca_pem, cert.pem(), key.serialize_pem())
}

/// The machine's MariaDB as root.
pub fn mariadb_opts(user: &str, password: &str) -> mysql_async::Opts {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(3306)
        .user(Some(user))
        .pass(Some(password))
        .prefer_socket(false)
        .into()
}

pub async fn mariadb(user: &str, password: &str) -> Result<mysql_async::Conn, mysql_async::Error> {
    mysql_async::Conn::new(mariadb_opts(user, password)).await
}

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

pub fn path_of(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(relative)
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
    pub invocations: std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>,
}

impl Drop for MotoExecutor {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Answers for functions that are not dbroles steps (a hook, say): function name → JSON.
pub type OtherFunctions = std::collections::HashMap<String, serde_json::Value>;

impl MotoExecutor {
    /// Starts moto; `deps` builds the steps' dependencies from its endpoint and the proxy's.
    pub async fn start<F, Fut>(deps: F, others: OtherFunctions) -> Self
    where
        F: FnOnce(String, String) -> Fut,
        Fut: std::future::Future<Output = dbroles_core::steps::Deps>,
    {
        let moto_bin = std::env::var("DBROLES_TEST_MOTO_BIN").expect("DBROLES_TEST_MOTO_BIN is not set: run scripts/test");
        let (port, proxy_port) = (free_port(), free_port());
        let log = std::fs::File::create(std::env::temp_dir().join(format!("moto-{port}.log"))).unwrap();
        let process = Command::new(moto_bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_PORT", proxy_port.to_string())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("moto_server starts");
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
        let deps = std::sync::Arc::new(deps(endpoint.clone(), proxy.clone()).await);
        let invocations = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let state = Proxy {
            deps,
            others: std::sync::Arc::new(others),
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
        Self { endpoint, proxy, process, invocations }
    }
}

#[derive(Clone)]
struct Proxy {
    deps: std::sync::Arc<dbroles_core::steps::Deps>,
    others: std::sync::Arc<OtherFunctions>,
    upstream: String,
    http: reqwest::Client,
    invocations: std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>,
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
    if let Some(answer) = proxy.others.get(&name) {
        return axum::Json(answer.clone()).into_response();
    }
    let Some(step) = dbroles_core::steps::Step::from_resource(&function) else {
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
    forward_to(&proxy.http, &proxy.upstream, request).await
}

/// Sends a request on to `upstream` as it came, and its answer back.
async fn forward_to(http: &reqwest::Client, upstream: &str, request: axum::extract::Request) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut upstream = http.request(parts.method.clone(), format!("{upstream}{path}")).body(body);
    for (name, value) in &parts.headers {
        if !matches!(name.as_str(), "host" | "connection" | "content-length" | "transfer-encoding" | "keep-alive") {
            upstream = upstream.header(name, value);
        }
    }
    match upstream.send().await {
        Ok(answer) => {
            let status = answer.status();
            let headers = answer.headers().clone();
            let bytes = answer.bytes().await.unwrap_or_default();
            let mut response = (status, bytes).into_response();
            for (name, value) in &headers {
                if !matches!(name.as_str(), "connection" | "content-length" | "transfer-encoding" | "keep-alive") {
                    response.headers_mut().insert(name, value.clone());
                }
            }
            response
        }
        Err(error) => (http::StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
    }
}

/// A proxy in front of moto that records the IAM action of every AWS request
/// passing through (`dynamodb:GetItem`, `rds:DescribeDBInstances`, ...), so a test
/// can check that the template grants each function what it does.
#[derive(Clone)]
pub struct ActionRecorder {
    /// Where the SDK should send its requests.
    pub endpoint: String,
    actions: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ActionRecorder {
    pub async fn start(upstream: &str) -> Self {
        let actions = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (http, upstream, recorded) = (reqwest::Client::new(), upstream.to_string(), actions.clone());
        let router = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let (http, upstream, recorded) = (http.clone(), upstream.clone(), recorded.clone());
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
                recorded.lock().unwrap().extend(iam_actions(&parts, &body));
                forward_to(&http, &upstream, axum::extract::Request::from_parts(parts, axum::body::Body::from(body))).await
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { endpoint, actions }
    }

    /// The distinct actions recorded since the last call.
    pub fn take(&self) -> std::collections::BTreeSet<String> {
        std::mem::take(&mut *self.actions.lock().unwrap()).into_iter().collect()
    }
}

/// The IAM actions an AWS request needs: the service from its SigV4 credential
/// scope, the operation from `X-Amz-Target` (JSON protocols), `Action=` (query
/// protocols) or the path (Lambda's REST API). A DynamoDB transaction needs the
/// actions of its items (IAM has no `TransactWriteItems`).
fn iam_actions(parts: &http::request::Parts, body: &[u8]) -> Vec<String> {
    let Some(action) = iam_action(parts, body) else { return Vec::new() };
    if action != "dynamodb:TransactWriteItems" {
        return vec![action];
    }
    let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let items = request["TransactItems"].as_array().cloned().unwrap_or_default();
    items
        .iter()
        .filter_map(|item| item.as_object()?.keys().next().cloned())
        .map(|kind| match kind.as_str() {
            "ConditionCheck" => "dynamodb:ConditionCheckItem".to_string(),
            other => format!("dynamodb:{other}Item"),
        })
        .collect()
}

fn iam_action(parts: &http::request::Parts, body: &[u8]) -> Option<String> {
    let authorization = parts.headers.get("authorization")?.to_str().ok()?;
    let scope = authorization.split("Credential=").nth(1)?.split(',').next()?;
    let service = scope.split('/').nth(3)?;
    let target = parts.headers.get("x-amz-target").and_then(|t| t.to_str().ok());
    let form = std::str::from_utf8(body)
        .ok()
        .and_then(|text| text.split('&').find_map(|pair| pair.strip_prefix("Action=")).map(str::to_string));
    let operation = match (target, form) {
        (Some(target), _) => target.rsplit('.').next()?.to_string(),
        (None, Some(action)) => action,
        _ if parts.uri.path().ends_with("/invocations") => "InvokeFunction".to_string(),
        _ => parts.uri.path().rsplit('/').next()?.to_string(),
    };
    Some(format!("{service}:{operation}"))
}

/// What the webhook receiver got: headers and body of each POST.
pub type Received = std::sync::Arc<std::sync::Mutex<Vec<(std::collections::HashMap<String, String>, String)>>>;

/// A local webhook endpoint: its URL, and what it received.
pub async fn webhook_receiver() -> (String, Received) {
    let received: Received = Default::default();
    let store = received.clone();
    let router = axum::Router::new().route(
        "/hooks/dbroles",
        axum::routing::post(move |headers: http::HeaderMap, body: String| {
            let store = store.clone();
            async move {
                let headers = headers.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string())).collect();
                store.lock().unwrap().push((headers, body));
                http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/dbroles", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, received)
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
    for (key, value) in tags {
        create = create.tags(aws_sdk_rds::types::Tag::builder().key(*key).value(*value).build());
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

/// The IAM actions `template.yaml` grants the function with this logical id, in
/// any of its policy statements (both branches of an `!If` included).
pub fn template_actions(function: &str) -> std::collections::BTreeSet<String> {
    let text = std::fs::read_to_string(path_of("template.yaml")).expect("template.yaml is readable");
    let template: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("template.yaml parses");
    let policies = &template["Resources"][function]["Properties"]["Policies"];
    assert!(!policies.is_null(), "template.yaml has no function {function} with policies");
    let mut actions = std::collections::BTreeSet::new();
    collect_actions(policies, &mut actions);
    actions
}

fn collect_actions(value: &serde_yaml_ng::Value, into: &mut std::collections::BTreeSet<String>) {
    use serde_yaml_ng::Value;
    match value {
        Value::Mapping(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    (Some("Action"), Value::String(action)) => {
                        into.insert(action.clone());
                    }
                    (Some("Action"), Value::Sequence(list)) => {
                        into.extend(list.iter().filter_map(|a| a.as_str().map(String::from)))
                    }
                    _ => collect_actions(value, into),
                }
            }
        }
        Value::Sequence(list) => list.iter().for_each(|item| collect_actions(item, into)),
        Value::Tagged(tagged) => collect_actions(&tagged.value, into),
        _ => {}
    }
}
