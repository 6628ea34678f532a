//! The provisioning workflow end to end: `statemachine/provision.asl.json` on
//! moto's Step Functions (execute mode; Lambda Invoke answered by the step
//! handlers) and on the local executor, against a PostgreSQL cluster with SCRAM
//! logins and the machine's MariaDB
//! logins standing in for the RDS instance moto describes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use dbroles_core::auth::{AuthError, Caller};
use dbroles_core::config::Config;
use dbroles_core::config::Settings;
use dbroles_core::config::TriggerSettings;
use dbroles_core::config::WebhookSettings;
use dbroles_core::deps::App;
use dbroles_core::deps::Deps;
use dbroles_core::engine::TlsConfig;
use dbroles_core::executor::{Executor, InProcess, Local};
use dbroles_core::notify::lambda::LambdaHook;
use dbroles_core::notify::webhook::sign_webhook;
use dbroles_core::secrets::aws::AwsSecrets;
use dbroles_core::secrets::SecretStore;
use dbroles_core::triggers;
use dbroles_tests::*;
use secrecy::ExposeSecret;
use serde_json::{json, Value};

const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn admin() -> Result<Caller, AuthError> {
    Ok(Caller { sub: "alice".into(), org: "acme".into(), groups: vec!["admin".into()] })
}

async fn call(app: &App, method: &str, uri: &str, body: Option<Value>) -> (http::StatusCode, Value) {
    call_json(app, admin(), method, uri, body).await
}

async fn wait_finished(app: &App, id: &str) -> Value {
    wait_for(app, id, |job| job["status"]["phase"] != "running").await
}

/// Finished, and the webhook step (which comes after Finalize) has recorded its outcome.
async fn wait_delivered(app: &App, id: &str) -> Value {
    wait_for(app, id, |job| job["status"]["phase"] != "running" && !job["webhook_status"].is_null()).await
}

async fn wait_for(app: &App, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..600 {
        let (_, job) = call(app, "GET", &format!("/dbroles/jobs/{id}"), None).await;
        if done(&job) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {id} still running")
}

/// The job without what differs from run to run.
fn comparable(job: &Value) -> Value {
    let mut job = job.clone();
    for field in ["id", "created_at", "completed_at"] {
        job[field] = Value::Null;
    }
    for result in job["status"]["result"].as_array_mut().unwrap() {
        result["completed_at"] = Value::Null;
    }
    job["hook_status"]["execution_time_sec"] = Value::Null;
    job
}

/// The database behind the instance moto describes.
enum Backend {
    /// A cluster of the test's own: SCRAM logins, as on RDS.
    Postgres(PgCluster),
    /// The machine's MariaDB, with a master like RDS's (no SUPER) of this name.
    MariaDb(String),
}

impl Backend {
    fn engine(&self) -> &'static str {
        match self {
            Backend::Postgres(_) => "postgres",
            Backend::MariaDb(_) => "mariadb",
        }
    }

    /// moto knows no default version for MariaDB.
    fn engine_version(&self) -> Option<String> {
        match self {
            Backend::Postgres(_) => None,
            Backend::MariaDb(_) => Some("10.11.8".into()),
        }
    }

    fn subtype(&self) -> &'static str {
        match self {
            Backend::Postgres(_) => "postgres",
            Backend::MariaDb(_) => "mysql",
        }
    }

    /// Where the server listens, and the port the instance's endpoint names.
    fn port(&self) -> u16 {
        match self {
            Backend::Postgres(cluster) => cluster.port,
            Backend::MariaDb(_) => 3306,
        }
    }

    fn endpoint_port(&self) -> i32 {
        match self {
            Backend::Postgres(_) => 5432,
            Backend::MariaDb(_) => 3306,
        }
    }

    fn master(&self) -> (&str, &str) {
        match self {
            Backend::Postgres(_) => ("master", RDS_MASTER_PASSWORD),
            Backend::MariaDb(master) => (master, MARIADB_MASTER_PASSWORD),
        }
    }

    /// A database with a table of the master's, which a run grants in.
    fn some_database(&self) -> &'static str {
        match self {
            Backend::Postgres(_) => "app",
            Backend::MariaDb(_) => "test",
        }
    }

    /// Whether the role (the user) exists, as the server's administrator sees it.
    async fn has_role(&self, role: &str) -> bool {
        match self {
            Backend::Postgres(cluster) => {
                let su = cluster.superuser("postgres").await;
                !su.query("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", &[&role]).await.unwrap().is_empty()
            }
            Backend::MariaDb(_) => {
                let mut root = mariadb("root", "").await.unwrap();
                let sql = "SELECT count(*) FROM mysql.user WHERE user = ?";
                let found: Option<i64> = mysql_async::prelude::Queryable::exec_first(&mut root, sql, (role,)).await.unwrap();
                found.unwrap_or(0) > 0
            }
        }
    }

    /// Whether `role` holds any privilege in database `db`, as the server's administrator sees it.
    async fn holds_in(&self, role: &str, db: &str) -> bool {
        match self {
            Backend::Postgres(cluster) => {
                let su = cluster.superuser(db).await;
                let sql = "SELECT pg_catalog.has_table_privilege($1, 'public.items', 'SELECT')";
                su.query_one(sql, &[&role]).await.unwrap().get(0)
            }
            Backend::MariaDb(_) => {
                let mut root = mariadb("root", "").await.unwrap();
                let grantee = format!("'{role}'@'%'");
                let sql = "SELECT count(*) FROM information_schema.schema_privileges WHERE grantee = ? AND table_schema = ?";
                let held: Option<i64> = mysql_async::prelude::Queryable::exec_first(&mut root, sql, (grantee, db)).await.unwrap();
                held.unwrap_or(0) > 0
            }
        }
    }

    async fn log_in(&self, user: &str, password: &str) {
        assert!(self.logs_in(user, password).await, "{user} logs in");
    }

    async fn logs_in(&self, user: &str, password: &str) -> bool {
        match self {
            Backend::Postgres(cluster) => cluster.client(user, password, "postgres").await.is_ok(),
            Backend::MariaDb(_) => mariadb(user, password).await.is_ok(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_definition_runs_on_step_functions_and_locally_with_the_same_result_on_postgresql() {
    let cluster = PgCluster::start();
    cluster.rds_like().await;
    end_to_end(Backend::Postgres(cluster)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_definition_runs_on_step_functions_and_locally_with_the_same_result_on_mariadb() {
    let master = unique("wfm");
    let _master = Leaves::new().user(&master);
    assert_eq!(rds_like_master(&master).await, MARIADB_MASTER_PASSWORD);
    end_to_end(Backend::MariaDb(master)).await;
}

/// The password `rds_like_master` gives.
const MARIADB_MASTER_PASSWORD: &str = "Rds-Master-Pa55word";

async fn end_to_end(backend: Backend) {
    let deployment = Deployment::start(backend).await;
    deployment.a_plan_on_the_fresh_instance_lists_every_change_and_makes_nothing().await;
    let (id, job) = deployment.a_post_completes_on_step_functions().await;
    deployment.every_step_ran_and_the_roles_log_in(&job).await;
    deployment.the_resource_holds_references_to_the_store().await;
    deployment.the_webhook_and_the_hook_saw_the_job_and_no_secret(&id, &job);
    deployment.the_finished_event_reached_the_bus(&id).await;
    deployment.the_local_executor_gives_the_same_job(&job).await;
    deployment.a_plan_on_step_functions_finds_a_hand_made_grant_and_announces_it().await;
    deployment.a_scoped_run_on_step_functions_covers_only_its_scope().await;
    deployment.a_revoke_on_step_functions_leaves_no_role_secret_or_connection().await;
}

/// The deployment the end-to-end test runs on: moto executing the state machine
/// (steps answered by the proxy), an RDS instance whose endpoint reaches the
/// backend, a webhook receiver, a hook, and a queue the finished-job events reach.
struct Deployment {
    backend: Backend,
    moto: MotoExecutor,
    aws: aws_config::SdkConfig,
    deps: Deps,
    /// The API on Step Functions.
    remote: App,
    instance_id: String,
    host: String,
    arn: String,
    prefix: String,
    request: Value,
    received: Received,
    queue: String,
    _leaves: Leaves,
}

impl Deployment {
    async fn start(backend: Backend) -> Self {
        let (webhook_url, received) = webhook_receiver().await;
        let prefix = unique("r");
        let settings = settings(&prefix);
        let instance_id = unique("orders-");
        let host = format!("{instance_id}.aaaaaaaaaa.us-east-1.rds.amazonaws.com");
        // Secrets Manager, as a deployment may choose (CredentialsStore); the own store is the default.
        let config = Config {
            endpoint_overrides: HashMap::from([(host.clone(), format!("127.0.0.1:{}", backend.port()))]),
            settings,
            credentials: dbroles_core::config::CredentialsStore::SecretsManager,
            ..Config::new(unique("jobs-"))
        };
        let webhook = WebhookSettings {
            url: webhook_url,
            secret: WEBHOOK_SECRET.to_string().into(),
            attempts: 3,
            backoff: Duration::from_millis(50),
            timeout: Duration::from_secs(5),
        };
        let (moto, aws, deps) = notifying_moto(&config, webhook).await;
        create_table(&aws, &config.table).await;
        let arn = instance_for(&backend, &aws, &instance_id, &host).await;
        let queue = finished_events_queue(&aws).await;
        let remote_config = Config { state_machine_arn: Some(provision_state_machine(&aws).await), ..config };
        let remote = dbroles_core::wiring::aws_app(&remote_config, &deps, &aws).unwrap();
        let request = json!({
            "agent_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
            "aws": {"instance_arn": arn},
            "connection_prefix_name": "orders-",
            "job_steps": ["create-connections", "send-webhook"]
        });
        let _leaves = Leaves::new().prefix(&prefix);
        Self { backend, moto, aws, deps, remote, instance_id, host, arn, prefix, request, received, queue, _leaves }
    }

    async fn a_post_completes_on_step_functions(&self) -> (String, Value) {
        let (status, created) = call(&self.remote, "POST", "/dbroles/jobs", Some(self.request.clone())).await;
        assert_eq!(status, http::StatusCode::ACCEPTED, "{created}");
        let id = created["job_id"].as_str().unwrap().to_string();
        let job = wait_delivered(&self.remote, &id).await;
        assert_eq!(job["status"]["phase"], "completed", "{job}");
        assert_eq!(
            job["spec"]["account_arn"], "arn:aws:sts::123456789012:user/moto",
            "GetCallerIdentity's ARN, as moto spells it"
        );
        assert_eq!(job["hook_status"]["exit_code"], 0);
        assert_eq!(job["hook_status"]["output"], "hook ran");
        (id, job)
    }

    async fn every_step_ran_and_the_roles_log_in(&self, job: &Value) {
        let executions: Vec<String> = self.moto.invocations.lock().unwrap().iter().map(|(f, _)| f.clone()).collect();
        for step in [
            "dbroles-resolve",
            "dbroles-master-credentials",
            "dbroles-provision",
            "dbroles-create-connections",
            "dbroles-finalize",
            "dbroles-webhook",
        ] {
            assert!(executions.iter().any(|f| f == step), "Step Functions invoked {step}: {executions:?}");
        }
        // The roles log in with the credentials in Secrets Manager.
        let store = AwsSecrets::new(aws_sdk_secretsmanager::Client::new(&self.aws), "dbroles");
        for level in ["ro", "rw", "ddl"] {
            let user = format!("{}_{level}", self.prefix);
            let result = job["status"]["result"].as_array().unwrap().iter().find(|r| r["user_role"] == user.as_str()).unwrap();
            assert_eq!(result["credentials_info"]["secrets_manager_provider"], "aws-secrets-manager");
            let secret_id = result["credentials_info"]["secret_id"].as_str().unwrap();
            let stored = store.read(secret_id).await.unwrap().expect("the role's secret is stored");
            let endpoint = (self.host.as_str(), self.backend.endpoint_port() as u16);
            assert_eq!((stored.host.as_str(), stored.port), endpoint, "the credentials name the real endpoint");
            self.backend.log_in(&user, stored.password.expose_secret()).await;
        }
    }

    /// One connection per role, secrets as references to the store.
    async fn the_resource_holds_references_to_the_store(&self) {
        let resource = self.deps.resources.get_resource("acme", &self.instance_id).await.unwrap().expect("the resource exists");
        let names: Vec<&str> = resource.roles.iter().map(|r| r.input.name.as_str()).collect();
        assert_eq!(names, ["orders-ro", "orders-rw", "orders-ddl"]);
        let ro = &resource.roles[0].input;
        assert_eq!(ro.connection_tags["hoop.dev/aws-connect.dbarn"], self.arn, "the tag hoop.dev reads");
        assert_eq!(ro.subtype.as_deref(), Some(self.backend.subtype()));
        let secret = format!("dbroles/123456789012/us-east-1/{}/{}_ro", self.instance_id, self.prefix);
        // As hoop.dev's agents read them: HOST, PORT, USER, PASS and DB, base64.
        let decoded: std::collections::BTreeMap<&str, String> = ro
            .secret
            .iter()
            .map(|(name, value)| {
                (name.as_str(), String::from_utf8(base64::engine::general_purpose::STANDARD.decode(value).unwrap()).unwrap())
            })
            .collect();
        let keys: Vec<&str> = decoded.keys().copied().collect();
        assert_eq!(keys, ["envvar:DB", "envvar:HOST", "envvar:PASS", "envvar:PORT", "envvar:USER"]);
        assert_eq!(decoded["envvar:PASS"], format!("_aws:{secret}:PASSWORD"));
        assert_eq!(decoded["envvar:HOST"], format!("_aws:{secret}:HOST"));
    }

    fn the_webhook_and_the_hook_saw_the_job_and_no_secret(&self, id: &str, job: &Value) {
        let deliveries = self.received.lock().unwrap().clone();
        let (headers, body) = deliveries.iter().find(|(_, body)| body.contains(id)).expect("the webhook was delivered");
        let timestamp: i64 = headers["webhook-timestamp"].parse().unwrap();
        let expected = sign_webhook(WEBHOOK_SECRET, &headers["webhook-id"], timestamp, body).unwrap();
        assert_eq!(headers["webhook-signature"], expected);
        let sent: Value = serde_json::from_str(body).unwrap();
        assert_eq!(sent["event_type"], "dbroles.job.finished", "hoop.dev's envelope");
        assert_eq!(sent["event_payload"]["status"]["phase"], "completed");
        assert_eq!(sent["event_payload"]["id"], id);
        assert!(!body.contains("PASSWORD\":"), "no secret in the webhook");
        assert_eq!(job["webhook_status"]["delivered"], true);
        let invocations = self.moto.invocations.lock().unwrap();
        let hook_payloads: Vec<&Value> = invocations.iter().filter(|(f, _)| f == "dbroles-test-hook").map(|(_, p)| p).collect();
        assert_eq!(hook_payloads.len(), 1);
        assert_eq!(hook_payloads[0]["job"]["id"], id);
    }

    async fn the_finished_event_reached_the_bus(&self, id: &str) {
        let event = self.event_for(id, "DB Role Job Finished").await;
        assert_eq!(event["resources"], json!([self.arn]));
    }

    async fn the_local_executor_gives_the_same_job(&self, job: &Value) {
        let local = App::new(&self.deps, Arc::new(Local::new(Executor::provision(0.01), self.deps.clone())));
        let (status, created) = call(&local, "POST", "/dbroles/jobs", Some(self.request.clone())).await;
        assert_eq!(status, http::StatusCode::ACCEPTED, "{created}");
        let local_job = wait_delivered(&local, created["job_id"].as_str().unwrap()).await;
        assert_eq!(comparable(&local_job), comparable(job));
    }
}

impl Deployment {
    /// A job in `mode` on Step Functions, finished.
    async fn finished_on_step_functions(&self, mode: &str) -> Value {
        let mut request = self.request.clone();
        request["mode"] = json!(mode);
        let (status, created) = call(&self.remote, "POST", "/dbroles/jobs", Some(request)).await;
        assert_eq!(status, http::StatusCode::ACCEPTED, "{created}");
        let job = wait_delivered(&self.remote, created["job_id"].as_str().unwrap()).await;
        assert_eq!(job["status"]["phase"], "completed", "{job}");
        job
    }

    /// The master grants `_ro` more than its level, as someone might by hand.
    async fn grant_by_hand(&self) -> String {
        let (master, password) = self.backend.master();
        let ro = format!("{}_ro", self.prefix);
        match &self.backend {
            Backend::Postgres(cluster) => {
                let app = cluster.client(master, password, "app").await.unwrap();
                app.batch_execute(&format!("GRANT INSERT ON public.items TO {ro}")).await.unwrap();
                "revoke INSERT on table app.public.items (not in level ro)".to_string()
            }
            Backend::MariaDb(_) => {
                let mut conn = mariadb(master, password).await.unwrap();
                mysql_async::prelude::Queryable::query_drop(&mut conn, format!("GRANT INSERT ON test.* TO '{ro}'@'%'"))
                    .await
                    .unwrap();
                "revoke INSERT on database test (not in level ro)".to_string()
            }
        }
    }

    async fn a_plan_on_the_fresh_instance_lists_every_change_and_makes_nothing(&self) {
        let job = self.finished_on_step_functions("plan").await;
        let (ro, rw, ddl) = (format!("{}_ro", self.prefix), format!("{}_rw", self.prefix), format!("{}_ddl", self.prefix));
        assert_eq!(job["status"]["message"], format!("drifted: a run would change {ro}, {rw}, {ddl}"), "{job}");
        let changes = &job["status"]["result"][0]["changes"];
        for change in [format!("create role {ro}"), "password: no stored credentials".to_string()] {
            assert!(changes.as_array().unwrap().contains(&json!(change)), "{change}: {changes}");
        }
        assert!(!self.backend.has_role(&ro).await, "the plan created no role");
        let store = AwsSecrets::new(aws_sdk_secretsmanager::Client::new(&self.aws), "dbroles");
        let secret = format!("dbroles/123456789012/us-east-1/{}/{ro}", self.instance_id);
        assert!(store.read(&secret).await.unwrap().is_none(), "nothing stored");
        assert!(self.deps.resources.get_resource("acme", &self.instance_id).await.unwrap().is_none(), "no connection");
    }

    async fn a_plan_on_step_functions_finds_a_hand_made_grant_and_announces_it(&self) {
        let job = self.finished_on_step_functions("plan").await;
        assert_eq!(job["status"]["message"], "in sync: a run would change nothing", "{job}");
        assert_eq!(job["hook_status"], Value::Null, "a plan runs no hook");
        let expected = self.grant_by_hand().await;
        let job = self.finished_on_step_functions("plan").await;
        assert_eq!(job["status"]["message"], format!("drifted: a run would change {}_ro", self.prefix), "{job}");
        assert_eq!(job["status"]["result"][0]["changes"], json!([expected]));
        let event = self.event_for(job["id"].as_str().unwrap(), "DB Roles Drift Detected").await;
        assert_eq!(event["resources"], json!([self.arn]));
        assert_eq!(event["detail"]["status"]["result"][0]["changes"], json!([expected]));
        self.finished_on_step_functions("run").await;
        let job = self.finished_on_step_functions("plan").await;
        assert_eq!(job["status"]["message"], "in sync: a run would change nothing", "the run revoked it: {job}");
    }

    /// `levels: ["ro"]` provisions only `_ro`; a database the scope excludes loses what `_ro` held there.
    async fn a_scoped_run_on_step_functions_covers_only_its_scope(&self) {
        let (excluded, ro) = (self.backend.some_database(), format!("{}_ro", self.prefix));
        assert!(self.backend.holds_in(&ro, excluded).await, "the full run granted {ro} in {excluded}");
        let mut request = self.request.clone();
        request["scope"] = json!({"levels": ["ro"], "databases": {"exclude": [excluded]}});
        let (status, created) = call(&self.remote, "POST", "/dbroles/jobs", Some(request)).await;
        assert_eq!(status, http::StatusCode::ACCEPTED, "{created}");
        let job = wait_delivered(&self.remote, created["job_id"].as_str().unwrap()).await;
        assert_eq!(job["status"]["phase"], "completed", "{job}");
        let roles: Vec<&str> =
            job["status"]["result"].as_array().unwrap().iter().map(|r| r["user_role"].as_str().unwrap()).collect();
        assert_eq!(roles, [ro.as_str()], "only the level of the scope");
        assert!(!self.backend.holds_in(&ro, excluded).await, "{ro} holds nothing in {excluded}, which the scope excludes");
    }

    /// The event of `detail_type` about job `id` that reached the queue.
    async fn event_for(&self, id: &str, detail_type: &str) -> Value {
        let sqs = aws_sdk_sqs::Client::new(&self.aws);
        for _ in 0..20 {
            let received = sqs.receive_message().queue_url(&self.queue).max_number_of_messages(10).send().await.unwrap();
            for message in received.messages() {
                let event: Value = serde_json::from_str(message.body().unwrap()).unwrap();
                if event["detail-type"] == detail_type && event["detail"]["id"] == id {
                    return event;
                }
            }
        }
        panic!("no {detail_type} event for job {id}");
    }

    async fn a_revoke_on_step_functions_leaves_no_role_secret_or_connection(&self) {
        let store = AwsSecrets::new(aws_sdk_secretsmanager::Client::new(&self.aws), "dbroles");
        let secret = |level: &str| format!("dbroles/123456789012/us-east-1/{}/{}_{level}", self.instance_id, self.prefix);
        let mut held = Vec::new();
        for level in ["ro", "rw", "ddl"] {
            held.push(store.read(&secret(level)).await.unwrap().expect("the role's secret is stored"));
        }
        assert!(self.deps.jobs.get_provisioned("acme", &self.arn).await.unwrap().is_some(), "rotated on schedule");
        let mut request = self.request.clone();
        request["mode"] = json!("revoke");
        let (status, created) = call(&self.remote, "POST", "/dbroles/jobs", Some(request)).await;
        assert_eq!(status, http::StatusCode::ACCEPTED, "{created}");
        let job = wait_delivered(&self.remote, created["job_id"].as_str().unwrap()).await;
        assert_eq!(job["status"]["phase"], "completed", "{job}");
        for (level, credentials) in ["ro", "rw", "ddl"].into_iter().zip(held) {
            assert!(store.read(&secret(level)).await.unwrap().is_none(), "{level}: the secret is deleted");
            let password = credentials.password.expose_secret();
            assert!(!self.backend.logs_in(&credentials.user, password).await, "{level}: the role is gone");
        }
        let resource = self.deps.resources.get_resource("acme", &self.instance_id).await.unwrap();
        assert!(resource.is_none(), "the connections are removed");
        assert!(self.deps.jobs.get_provisioned("acme", &self.arn).await.unwrap().is_none(), "no longer rotated on schedule");
    }
}

/// moto in execute mode whose steps, and the deployment's own dependencies, have
/// the webhook and a hook (a Lambda function the proxy answers).
async fn notifying_moto(config: &Config, webhook: WebhookSettings) -> (MotoExecutor, aws_config::SdkConfig, Deps) {
    let with_notifications = move |mut deps: Deps, proxy_aws: &aws_config::SdkConfig| {
        deps.webhook = Some(dbroles_core::wiring::http_webhook(webhook.clone()));
        let client = aws_sdk_lambda::Client::new(proxy_aws);
        deps.hook = Some(Arc::new(LambdaHook { client, function: "dbroles-test-hook".into() }));
        deps
    };
    let hook_answer = HashMap::from([("dbroles-test-hook".to_string(), json!({"exit_code": 0, "output": "hook ran"}))]);
    let (steps_config, remote_notifications) = (config.clone(), with_notifications.clone());
    let moto = MotoExecutor::start(
        |endpoint, proxy| async move {
            let deps = dbroles_core::wiring::aws(&steps_config, &aws_config(&endpoint).await).await.unwrap();
            remote_notifications(deps, &aws_config(&proxy).await)
        },
        hook_answer,
    )
    .await;
    let aws = aws_config(&moto.endpoint).await;
    let deps = with_notifications(dbroles_core::wiring::aws(config, &aws).await.unwrap(), &aws_config(&moto.proxy).await);
    (moto, aws, deps)
}

/// The instance in moto's RDS, its managed master secret holding the backend's real credentials: its ARN.
async fn instance_for(backend: &Backend, aws: &aws_config::SdkConfig, instance_id: &str, host: &str) -> String {
    let created = create_instance(aws, instance_id, backend.engine(), backend.master().0)
        .set_engine_version(backend.engine_version())
        .manage_master_user_password(true)
        .port(backend.endpoint_port())
        .tags(aws_sdk_rds::types::Tag::builder().key("dbroles:org").value(ORG).build())
        .send()
        .await
        .unwrap()
        .db_instance
        .unwrap();
    assert_eq!(created.endpoint.as_ref().and_then(|e| e.address.as_deref()), Some(host));
    aws_sdk_secretsmanager::Client::new(aws)
        .put_secret_value()
        .secret_id(created.master_user_secret.unwrap().secret_arn.unwrap())
        .secret_string(json!({"username": backend.master().0, "password": backend.master().1}).to_string())
        .send()
        .await
        .unwrap();
    created.db_instance_arn.unwrap()
}

/// A queue that an EventBridge rule sends the finished-job events to: its URL.
async fn finished_events_queue(aws: &aws_config::SdkConfig) -> String {
    let sqs = aws_sdk_sqs::Client::new(aws);
    let queue = sqs.create_queue().queue_name(unique("finished-")).send().await.unwrap().queue_url.unwrap();
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&queue)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    let queue_arn = attributes[&aws_sdk_sqs::types::QueueAttributeName::QueueArn].clone();
    let events = aws_sdk_eventbridge::Client::new(aws);
    let rule = unique("finished-");
    events
        .put_rule()
        .name(&rule)
        .event_pattern(
            json!({"source": ["dbroles"], "detail-type": ["DB Role Job Finished", "DB Roles Drift Detected"]}).to_string(),
        )
        .send()
        .await
        .unwrap();
    let target = aws_sdk_eventbridge::types::Target::builder().id("queue").arn(queue_arn).build().unwrap();
    events.put_targets().rule(&rule).targets(target).send().await.unwrap();
    queue
}

fn local_deps(
    store: Arc<dbroles_core::store::sqlite::SqliteStore>,
    instances: Vec<dbroles_core::inventory::local::LocalInstance>,
    settings: Settings,
) -> Deps {
    dbroles_core::wiring::local(
        store,
        Arc::new(dbroles_core::inventory::local::LocalInventory::new(instances).unwrap()),
        settings,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_down_fails_the_job_releases_the_lock_and_a_rerun_succeeds() {
    let cluster = PgCluster::start();
    cluster.rds_like().await;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(dbroles_core::store::sqlite::SqliteStore::open(&dir.path().join("s.db")).unwrap());
    let arn = "arn:aws:rds:us-east-1:000000000000:db:flaky";
    let instance = cluster.local_instance(arn);
    let settings = Settings {
        role_prefix: unique("r"),
        tls: TlsConfig::disabled(),
        connect_timeout: Duration::from_secs(3),
        accounts: acme_at_home(),
        ..Settings::default()
    };
    let deps = local_deps(store.clone(), vec![instance], settings.clone());
    let app = App::new(&deps, Arc::new(Local::new(Executor::provision(0.01), deps.clone())));
    let request = json!({"agent_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890", "aws": {"instance_arn": arn}, "connection_prefix_name": "f-", "job_steps": []});

    cluster.stop();
    let (status, created) = call(&app, "POST", "/dbroles/jobs", Some(request.clone())).await;
    assert_eq!(status, http::StatusCode::ACCEPTED, "{created}");
    let job = wait_finished(&app, created["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"]["phase"], "failed");
    assert!(job["status"]["message"].as_str().unwrap().contains(&format!("127.0.0.1:{}", cluster.port)), "{job}");
    assert!(!job["completed_at"].is_null());

    cluster.resume();
    let (status, created) = call(&app, "POST", "/dbroles/jobs", Some(request)).await;
    assert_eq!(status, http::StatusCode::ACCEPTED, "the lock was released: {created}");
    let job = wait_finished(&app, created["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"]["phase"], "completed", "{job}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_store_down_fails_the_job_before_any_change_in_the_database() {
    let cluster = PgCluster::start();
    cluster.rds_like().await;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(dbroles_core::store::sqlite::SqliteStore::open(&dir.path().join("s.db")).unwrap());
    let arn = "arn:aws:rds:us-east-1:000000000000:db:nosecrets";
    let instance = cluster.local_instance(arn);
    let prefix = unique("r");
    let settings = Settings { role_prefix: prefix.clone(), tls: TlsConfig::disabled(), ..Settings::default() };
    let mut deps = local_deps(store.clone(), vec![instance], settings.clone());
    // Secrets Manager on a port where nothing answers.
    let dead = aws_config(&format!("http://127.0.0.1:{}", free_port())).await;
    deps.secrets = Arc::new(AwsSecrets::new(aws_sdk_secretsmanager::Client::new(&dead), "dbroles"));
    let executor = Local::new(Executor::provision(0.001), deps.clone());
    let new = dbroles_tests::stored_job(dbroles_core::lifecycle::jobs::new_record(
        "acme",
        "alice",
        serde_json::from_value(json!({"agent_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890", "aws": {"instance_arn": arn}, "connection_prefix_name": "s-", "job_steps": []})).unwrap(),
        Default::default(),
    ));
    let record = new.record.clone();
    use dbroles_core::store::JobStore;
    store.create_job(new).await.unwrap();
    executor.execute(&record, &|_| {}).await.unwrap();
    let job = store.get_job("acme", record.id()).await.unwrap().unwrap().job;
    assert_eq!(job.phase(), dbroles_core::model::job::Phase::Failed);
    let message = &job.status.as_ref().unwrap().message;
    assert!(message.contains("before any change to the database"), "{message}");
    let roles = cluster
        .superuser("postgres")
        .await
        .query("SELECT 1 FROM pg_roles WHERE rolname LIKE $1", &[&format!("{prefix}%")])
        .await
        .unwrap();
    assert!(roles.is_empty(), "no role was created");
}

#[tokio::test]
async fn an_aborted_execution_fails_its_job_through_the_status_change_rule() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(dbroles_core::store::sqlite::SqliteStore::open(&dir.path().join("s.db")).unwrap());
    let arn = "arn:aws:rds:us-east-1:000000000000:db:postgres";
    let deps = local_deps(
        store.clone(),
        vec![dbroles_core::inventory::local::LocalInstance::on_loopback(arn, "postgres", 5432, "postgres").tagged_for(ORG)],
        Settings { accounts: acme_at_home(), ..Settings::default() },
    );
    let app = App::new(&deps, Arc::new(Held::default()));
    let request = json!({"agent_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890", "aws": {"instance_arn": arn}, "connection_prefix_name": "a-", "job_steps": []});
    let (_, created) = call(&app, "POST", "/dbroles/jobs", Some(request.clone())).await;
    let id = created["job_id"].as_str().unwrap();
    let event = execution_ended("acme", id, "ABORTED");
    let outcome = triggers::handle(&app, &TriggerSettings::default(), &event).await.unwrap();
    assert_eq!(outcome.repaired, [id]);
    let (_, job) = call(&app, "GET", &format!("/dbroles/jobs/{id}"), None).await;
    assert_eq!(job["status"]["phase"], "failed");
    assert_eq!(job["status"]["message"], "the execution ended ABORTED");
    let (status, _) = call(&app, "POST", "/dbroles/jobs", Some(request)).await;
    assert_eq!(status, http::StatusCode::ACCEPTED, "the lock was released");
    // A second delivery of the event changes nothing.
    let again = triggers::handle(&app, &TriggerSettings::default(), &event).await.unwrap();
    assert!(again.repaired.is_empty());
}

#[tokio::test]
async fn an_execution_longer_than_its_timeout_fails_with_states_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(dbroles_core::store::sqlite::SqliteStore::open(&dir.path().join("s.db")).unwrap());
    let deps = local_deps(store, Vec::new(), Settings::default());
    let definition = r#"{"StartAt": "Wait", "TimeoutSeconds": 1, "States": {
        "Wait": {"Type": "Wait", "Seconds": 30, "Next": "Done"}, "Done": {"Type": "Succeed"}}}"#;
    let executor = Executor::load(definition, 1.0).unwrap();
    let error = executor.execute(&InProcess(deps.clone()), json!({"org_id": "acme", "job_id": "j"}), &|_| {}).await.unwrap_err();
    assert_eq!(error.error, "States.Timeout");
    assert_eq!(error.message(), "States.Timeout: the execution ran longer than 1 s");
}
