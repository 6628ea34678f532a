//! Every sample event of the step functions (`events/<step>/`) and of the
//! EventBridge function (`events/events/`) through its handler, on moto: what
//! `sam local invoke -e events/...` feeds each Lambda.
//!
//! The step samples carry one job from Resolve to Webhook, and a fleet job from its
//! selection to its end; the trigger samples then start a job for a tagged
//! instance, start a rotation fleet job over the provisioned one, and fail the job
//! of an execution that died.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dbroles_core::config::WebhookSettings;
use dbroles_core::config::{Config, Settings};
use dbroles_core::deps::{App, Deps};
use dbroles_core::engine::TlsConfig;
use dbroles_core::lifecycle::jobs;
use dbroles_core::model::job::{Job, Phase};
use dbroles_core::model::request::{CreateJobRequest, Mode};
use dbroles_core::notify::{Hook, HookOutcome};
use dbroles_core::steps::Step;
use dbroles_core::store::dynamodb::DynamoStore;
use dbroles_core::store::JobStore;
use dbroles_lambda::{handle_step, handle_trigger};
use dbroles_tests::{
    aws_config, moto_endpoint, moto_instance, template_actions, unique, webhook_receiver, ActionRecorder, MotoInstance, Received,
};
use serde_json::{json, Value};

/// The job the step samples carry.
const JOB: &str = "9D3E6B1A-52C4-4F7E-8A90-1B2C3D4E5F60";
/// The job of `finalize/caught-error.json`, whose provisioning failed.
const FAILED_STEP_JOB: &str = "5A6B7C8D-9E0F-4A1B-8C2D-3E4F5A6B7C8D";
/// The job of `events/execution-failed.json`, whose execution died.
const DEAD_EXECUTION_JOB: &str = "2C4E6A8B-1D3F-4B5A-9C7E-0F1A2B3C4D5E";
/// A job stored ten minutes ago whose execution never started (the API died in between).
const NEVER_STARTED_JOB: &str = "5B7D9F1A-3C5E-4F6A-8B0C-2D4E6F8A0B1C";

/// Each step's samples, in the order the state machine runs them.
const STEP_SAMPLES: &[(Step, &str)] = &[
    (Step::Resolve, "resolve/task.json"),
    (Step::OpenNetwork, "open-network/task.json"),
    (Step::MasterCredentials, "master-credentials/task.json"),
    (Step::InstanceStatus, "instance-status/task.json"),
    (Step::Provision, "provision/task.json"),
    (Step::CreateConnections, "create-connections/task.json"),
    (Step::Hook, "hook/task.json"),
    (Step::Finalize, "finalize/task.json"),
    (Step::Webhook, "webhook/task.json"),
    (Step::Finalize, "finalize/caught-error.json"),
    (Step::FleetSelect, "fleet-select/task.json"),
    (Step::FleetStartJob, "fleet-start-job/task.json"),
    (Step::FleetFinish, "fleet-finish/task.json"),
];

/// The fleet job the fleet step samples carry, and the instance its start-job sample names.
const FLEET: &str = "F1EE7A5B-0C1D-4E2F-8A3B-4C5D6E7F8091";
const FLEET_INSTANCE: &str = "arn:aws:rds:us-east-1:123456789012:db:inventory-db";

const TRIGGER_SAMPLES: &[&str] = &[
    "events/rds-instance-created.json",
    "events/rotation-schedule.json",
    "events/execution-failed.json",
    "events/sweep-schedule.json",
    "events/drift-check.json",
    "events/rds-instance-deleted.json",
];

fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../events")
}

fn sample(file: &str) -> Value {
    let text = std::fs::read_to_string(events_dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// The hook the deployment configured: it records the jobs it saw.
#[derive(Default)]
struct RecordingHook(Mutex<Vec<Job>>);

#[async_trait::async_trait]
impl Hook for RecordingHook {
    async fn run(&self, job: &Job) -> HookOutcome {
        self.0.lock().unwrap().push(job.clone());
        HookOutcome { exit_code: 0, output: format!("registered {}", job.db_arn()) }
    }
}

/// A running job of `acme` with a fixed id, as `POST /dbroles/jobs` stores it.
async fn seed_running(store: &dyn JobStore, id: &str, instance_arn: &str, extra: Value) -> CreateJobRequest {
    let mut request = json!({
        "agent_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
        "aws": {"instance_arn": instance_arn},
        "connection_prefix_name": "payments-",
        "job_steps": ["create-connections", "send-webhook"]
    });
    merge(&mut request, extra);
    let request: CreateJobRequest = serde_json::from_value(request).unwrap();
    let spec =
        dbroles_core::model::job::JobSpec { db_arn: instance_arn.into(), db_engine: "postgres".into(), ..Default::default() };
    let mut record = jobs::new_record("acme", "alice", request.clone(), spec);
    record.job.id = id.into();
    store.create_job(dbroles_tests::stored_job(record)).await.unwrap();
    request
}

/// A job stored ten minutes ago, naming an execution that was never started.
async fn seed_never_started(store: &dyn JobStore, provision_machine: &str) {
    let arn = "arn:aws:rds:us-east-1:123456789012:db:never-started-db";
    let request: CreateJobRequest = serde_json::from_value(json!({
        "agent_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890", "aws": {"instance_arn": arn}, "connection_prefix_name": "n-", "job_steps": []
    }))
    .unwrap();
    let spec = dbroles_core::model::job::JobSpec { db_arn: arn.into(), db_engine: "postgres".into(), ..Default::default() };
    let mut record = jobs::new_record("acme", "alice", request, spec);
    record.job.id = NEVER_STARTED_JOB.into();
    record.job.created_at = dbroles_core::model::Timestamp(record.job.created_at.0 - chrono::Duration::minutes(10));
    record.execution = Some(dbroles_core::workflow::execution_arn(provision_machine, NEVER_STARTED_JOB));
    store.create_job(dbroles_tests::stored_job(record)).await.unwrap();
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(into), Value::Object(from)) => {
            for (key, value) in from {
                merge(into.entry(key).or_insert(Value::Null), value);
            }
        }
        (into, from) => *into = from,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_step_and_trigger_event_runs_through_its_handler() {
    every_sample_has_an_expectation();
    let samples = Samples::deploy().await;
    samples.the_step_samples_carry_one_job_from_resolve_to_webhook().await;
    let app = samples.the_trigger_samples_start_rotate_and_repair().await;
    samples.an_untagged_instance_starts_nothing(&app).await;
}

fn every_sample_has_an_expectation() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(events_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|dir| dir != "api")
        .flat_map(|dir| {
            std::fs::read_dir(events_dir().join(&dir))
                .unwrap()
                .map(move |e| format!("{dir}/{}", e.unwrap().file_name().into_string().unwrap()))
        })
        .collect();
    let listed: BTreeSet<String> =
        STEP_SAMPLES.iter().map(|(_, file)| file.to_string()).chain(TRIGGER_SAMPLES.iter().map(|f| f.to_string())).collect();
    assert_eq!(on_disk, listed, "every sample event has an expectation here");
}

/// The deployment the samples run on: a table, the instance the samples name
/// (in a VPC, its endpoint mapped to the machine's PostgreSQL), a state machine,
/// the functions' AWS calls through a recorder, a hook and a webhook receiver.
struct Samples {
    aws: aws_config::SdkConfig,
    instance: MotoInstance,
    prefix: String,
    config: Config,
    recorder: ActionRecorder,
    observed: aws_config::SdkConfig,
    deps: Deps,
    hook: Arc<RecordingHook>,
    received: Received,
    /// The request of the job the step samples carry.
    request: CreateJobRequest,
    /// The roles the samples make on the machine's PostgreSQL, dropped when the test ends.
    _leaves: dbroles_tests::Leaves,
}

impl Samples {
    async fn deploy() -> Self {
        let aws = aws_config(&moto_endpoint()).await;
        // Tagged with its organisation: in the deployment's own account, dbroles changes only such instances.
        let tags = [("dbroles:org", "acme")];
        let instance = moto_instance(&aws, &unique("payments-"), "postgres", ("postgres", "trust-auth-ignores-it"), &tags).await;
        let prefix = unique("r");
        let leaves = dbroles_tests::Leaves::new().prefix(&prefix);
        let table = unique("jobs-");
        let machine = |name: &str| {
            aws_sdk_sfn::Client::new(&aws)
                .create_state_machine()
                .name(unique(name))
                .definition(json!({"StartAt": "Wait", "States": {"Wait": {"Type": "Pass", "End": true}}}).to_string())
                .role_arn("arn:aws:iam::123456789012:role/dbroles-states")
                .send()
        };
        let (provision, fleet) = (machine("provision-").await.unwrap(), machine("fleet-").await.unwrap());
        let config = Config {
            state_machine_arn: Some(provision.state_machine_arn),
            fleet_state_machine_arn: Some(fleet.state_machine_arn),
            credentials: dbroles_tests::own_store_on_kms(&aws).await,
            endpoint_overrides: HashMap::from([(instance.host.clone(), "127.0.0.1:5432".to_string())]),
            settings: Settings {
                role_prefix: prefix.clone(),
                tls: TlsConfig::disabled(),
                connect_timeout: Duration::from_secs(5),
                accounts: dbroles_tests::acme_at_home(),
                ..Settings::default()
            },
            ..Config::new(table.clone())
        };
        DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), &table).create_table().await.unwrap();
        // The functions' AWS calls go through a recorder: the template must grant each what it does.
        let recorder = ActionRecorder::start(&moto_endpoint()).await;
        let observed = aws_config(&recorder.endpoint).await;
        let mut deps: Deps = dbroles_core::wiring::aws(&config, &observed).await.unwrap();
        let hook = Arc::new(RecordingHook::default());
        deps.hook = Some(hook.clone());
        let (url, received) = webhook_receiver().await;
        deps.webhook = Some(dbroles_core::wiring::http_webhook(WebhookSettings {
            url,
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string().into(),
            attempts: 2,
            backoff: Duration::from_millis(20),
            timeout: Duration::from_secs(5),
        }));

        let request = seed_running(
            deps.jobs.as_ref(),
            JOB,
            &instance.arn,
            json!({"aws": {"default_security_group": {"ingress_cidr": "10.40.0.0/16"}}}),
        )
        .await;
        seed_running(deps.jobs.as_ref(), FAILED_STEP_JOB, "arn:aws:rds:us-east-1:123456789012:db:ledger-db", json!({})).await;
        seed_fleet(&aws, &deps).await;
        Self { aws, instance, prefix, config, recorder, observed, deps, hook, received, request, _leaves: leaves }
    }

    async fn job(&self) -> Job {
        self.deps.jobs.get_job("acme", JOB).await.unwrap().unwrap().job
    }

    async fn the_step_samples_carry_one_job_from_resolve_to_webhook(&self) {
        let Self { aws, instance, prefix, config, recorder, deps, hook, received, .. } = self;
        let job = || self.job();
        for (step, file) in STEP_SAMPLES {
            recorder.take();
            let out = handle_step(*step, &deps, sample(file))
                .await
                .unwrap_or_else(|e| panic!("{file}: {}: {}", e.error_type, e.error_message));
            let function = format!("{}Function", step.substitution().trim_end_matches("FunctionArn"));
            let taken = recorder.take();
            if *step == Step::Provision {
                // The provision function runs in the VPC: CreateVpcEndpoints gives it a route to each service it calls.
                let services: BTreeSet<String> = taken.iter().filter_map(|a| a.split(':').next()).map(String::from).collect();
                let endpoints = dbroles_tests::template_endpoint_services();
                assert!(
                    services.is_subset(&endpoints),
                    "provision calls {services:?}; template.yaml has endpoints for {endpoints:?}"
                );
            }
            assert_granted(&function, taken, file);
            match *file {
                "resolve/task.json" => {
                    assert_eq!((out["open_network"].clone(), out["create_connections"].clone()), (json!(true), json!(true)));
                    let spec = job().await.spec.unwrap();
                    assert_eq!((spec.db_arn.as_str(), spec.db_engine.as_str()), (instance.arn.as_str(), "postgres"));
                }
                "open-network/task.json" => {
                    let groups = security_groups_of(&aws, &instance.identifier).await;
                    assert_eq!(groups.len(), 2, "the application's group stays beside dbroles': {groups:?}");
                    assert!(groups.contains(&instance.app_group));
                }
                "master-credentials/task.json" | "instance-status/task.json" => {
                    assert_eq!(out["master_ready"], true, "{file}: the managed secret is readable and the instance available")
                }
                "provision/task.json" => {
                    let status = job().await.status.unwrap();
                    let users: Vec<&str> = status.result.iter().map(|r| r.user_role.as_str()).collect();
                    assert_eq!(users, [format!("{prefix}_ro"), format!("{prefix}_rw"), format!("{prefix}_ddl")]);
                    assert!(status.result.iter().all(|r| r.status == Phase::Completed), "{status:?}");
                    // The seed's default: the own store, whose credentials_info names nothing.
                    for result in &status.result {
                        let info = result.credentials_info.as_ref().unwrap();
                        assert_eq!(info.secrets_manager_provider, dbroles_core::model::job::SecretsProvider::Database);
                        assert!(info.secret_id.is_empty() && info.secret_keys.is_empty(), "{info:?}");
                    }
                }
                "create-connections/task.json" => {
                    let resource = deps.resources.get_resource("acme", &instance.identifier).await.unwrap().unwrap();
                    let names: Vec<&str> = resource.roles.iter().map(|r| r.input.name.as_str()).collect();
                    assert_eq!(names, ["payments-ro", "payments-rw", "payments-ddl"]);
                    // The connections carry the values, base64, but the password only as a
                    // reference to the own store; the table holds it only encrypted.
                    use base64::Engine as _;
                    use secrecy::ExposeSecret;
                    let decode =
                        |value: &str| String::from_utf8(base64::engine::general_purpose::STANDARD.decode(value).unwrap());
                    let role = &resource.roles[0];
                    let secret_id = role.input.secret["envvar:PASS"].clone();
                    let reference = decode(&secret_id).unwrap();
                    let stored_id = reference.strip_prefix("_dbroles:").and_then(|r| r.strip_suffix(":PASSWORD")).unwrap();
                    let credentials =
                        deps.secrets.read(stored_id).await.unwrap().expect("the reference names the stored credentials");
                    let password = credentials.password.expose_secret().to_string();
                    assert!(password.len() >= 24, "a generated password");
                    assert_eq!(decode(&role.input.secret["envvar:USER"]).unwrap(), format!("{prefix}_ro"));
                    let items = aws_sdk_dynamodb::Client::new(&aws).scan().table_name(&config.table).send().await.unwrap();
                    let mut sealed = 0;
                    for item in items.items() {
                        let text = format!("{item:?}");
                        assert!(!text.contains(&password), "a password in the item {}", item["PK"].as_s().unwrap());
                        if item["PK"].as_s().unwrap().starts_with("CRED#") {
                            assert!(item["value"].as_s().unwrap().starts_with("kms:"));
                            sealed += 1;
                        }
                    }
                    assert!(sealed > 0);
                }
                "hook/task.json" => {
                    let status = job().await.hook_status.unwrap();
                    assert_eq!((status.exit_code, status.output), (0, format!("registered {}", instance.arn)));
                    assert_eq!(hook.0.lock().unwrap().len(), 1);
                }
                "finalize/task.json" => {
                    let job = job().await;
                    assert_eq!(job.phase(), Phase::Completed, "{:?}", job.status);
                    assert!(job.completed_at.is_some());
                }
                "webhook/task.json" => {
                    assert_eq!(job().await.webhook_status.unwrap().delivered, true);
                    assert!(received.lock().unwrap().iter().any(|(_, body)| body.contains(JOB)));
                }
                "fleet-select/task.json" => {
                    let selected: Vec<String> = serde_json::from_value(out["instances"].clone()).unwrap();
                    assert!(selected.contains(&FLEET_INSTANCE.to_string()) && selected.contains(&instance.arn), "{out}");
                    assert_eq!(out["max_concurrency"], 4);
                    let fleet = fleet_record(deps).await;
                    assert_eq!(fleet.selected.as_ref(), Some(&selected), "the fleet job keeps its selection");
                }
                "fleet-start-job/task.json" => {
                    assert_eq!(out["outcome"], "started", "{out}");
                    let job = deps.jobs.get_job("acme", out["job_id"].as_str().unwrap()).await.unwrap().unwrap();
                    assert_eq!(job.job.fleet_job_id.as_deref(), Some(FLEET));
                    assert_eq!(job.job.db_arn(), FLEET_INSTANCE);
                    assert_eq!(job.request.connection_prefix_name, "inventory-db-", "each instance names its own connections");
                    assert_eq!(job.job.phase(), Phase::Running);
                }
                "fleet-finish/task.json" => {
                    let fleet = fleet_record(deps).await;
                    let status = &fleet.fleet.status;
                    assert_eq!((status.phase, status.counts.running), (Phase::Failed, 1), "{status:?}");
                    assert!(status.message.ends_with("not provisioned"), "{}", status.message);
                }
                "finalize/caught-error.json" => {
                    let failed = deps.jobs.get_job("acme", FAILED_STEP_JOB).await.unwrap().unwrap().job;
                    assert_eq!(failed.phase(), Phase::Failed);
                    assert_eq!(failed.status.unwrap().message, "cannot connect to 10.0.3.17:5432: connection refused");
                }
                other => panic!("no expectation for {other}"),
            }
        }
    }

    /// A tagged instance was created (its id is the sample's), the rotation
    /// schedule fired, and an execution died.
    async fn the_trigger_samples_start_rotate_and_repair(&self) -> App {
        let Self { aws, config, recorder, observed, deps, request, .. } = self;
        let reports = aws_sdk_rds::Client::new(&aws);
        if reports.describe_db_instances().db_instance_identifier("reports-db").send().await.is_err() {
            moto_instance(
                &aws,
                "reports-db",
                "postgres",
                ("postgres", "x"),
                &[("dbroles:provision", "true"), ("dbroles:org", "acme")],
            )
            .await;
        }
        seed_running(deps.jobs.as_ref(), DEAD_EXECUTION_JOB, "arn:aws:rds:us-east-1:123456789012:db:audit-db", json!({})).await;
        seed_never_started(deps.jobs.as_ref(), config.state_machine_arn.as_deref().unwrap()).await;
        let app = dbroles_core::wiring::aws_app(&config, &deps, &observed).unwrap();
        let settings = dbroles_core::config::TriggerSettings::default();
        for file in TRIGGER_SAMPLES {
            recorder.take();
            let out = handle_trigger(&app, &settings, sample(file))
                .await
                .unwrap_or_else(|e| panic!("{file}: {}: {}", e.error_type, e.error_message));
            assert_granted("EventsFunction", recorder.take(), file);
            let started: Vec<String> = serde_json::from_value(out["started"].clone()).unwrap();
            match *file {
                "events/rds-instance-created.json" => {
                    assert_eq!(started.len(), 1, "{out}");
                    let record =
                        deps.jobs.get_job("acme", &started[0]).await.unwrap().expect("the tag's organisation owns the job");
                    assert_eq!(record.job.phase(), Phase::Running);
                    assert_eq!(record.request.aws.instance_arn, "arn:aws:rds:us-east-1:123456789012:db:reports-db");
                    assert_eq!(record.request.connection_prefix_name, "reports-db-");
                }
                "events/rotation-schedule.json" => {
                    assert_eq!(started.len(), 1, "one fleet job for the one organisation: {out}");
                    let fleet = deps.fleets.get_fleet("acme", &started[0]).await.unwrap().expect("the rotation's fleet job");
                    assert!(fleet.fleet.request.selector.provisioned, "it rotates the provisioned instances");
                    assert_eq!(fleet.fleet.created_by, "eventbridge:rotation");
                    assert!(fleet.execution.is_some(), "its execution started");
                    // Its Map's item for the provisioned instance repeats the request that provisioned it.
                    let child = json!({"org_id": "acme", "fleet_job_id": started[0], "instance_arn": request.aws.instance_arn});
                    let out = handle_step(Step::FleetStartJob, deps, child).await.unwrap();
                    let record = deps.jobs.get_job("acme", out["job_id"].as_str().unwrap()).await.unwrap().unwrap();
                    assert_eq!(&record.request, request, "a rotation repeats the request that provisioned the instance");
                }
                "events/drift-check.json" => {
                    assert_eq!(started.len(), 1, "one fleet plan for the one organisation: {out}");
                    let fleet = deps.fleets.get_fleet("acme", &started[0]).await.unwrap().expect("the drift check's fleet job");
                    let fleet_request = &fleet.fleet.request;
                    assert!(fleet_request.selector.provisioned, "it plans the provisioned instances");
                    assert_eq!((fleet_request.mode, fleet.fleet.created_by.as_str()), (Mode::Plan, "eventbridge:drift-check"));
                    assert!(fleet.execution.is_some(), "its execution started");
                }
                "events/rds-instance-deleted.json" => {
                    // reports-db was never provisioned (and still exists): nothing of it is kept, nothing removed.
                    assert_eq!((&out["repaired"], &out["skipped"]), (&json!([]), &json!([])), "{out}");
                }
                "events/sweep-schedule.json" => {
                    assert_eq!(out["repaired"], json!([NEVER_STARTED_JOB]), "only the job old enough: {out}");
                    let job = deps.jobs.get_job("acme", NEVER_STARTED_JOB).await.unwrap().unwrap().job;
                    assert_eq!(job.phase(), Phase::Failed);
                    let message = job.status.unwrap().message;
                    assert_eq!(message, "the job's execution never started or was lost: found by the sweep schedule");
                    let locks = deps.jobs.locks().await.unwrap();
                    assert!(!locks.iter().any(|lock| lock.job_id == NEVER_STARTED_JOB), "its server was released: {locks:?}");
                }
                "events/execution-failed.json" => {
                    assert_eq!(out["repaired"], json!([DEAD_EXECUTION_JOB]));
                    let dead = deps.jobs.get_job("acme", DEAD_EXECUTION_JOB).await.unwrap().unwrap().job;
                    assert_eq!(dead.phase(), Phase::Failed);
                    let message = dead.status.unwrap().message;
                    assert!(message.starts_with("the execution ended FAILED: Lambda.Unknown"), "{message}");
                    assert!(message.contains("Task timed out after 60.00 seconds"), "{message}");
                }
                other => panic!("no expectation for {other}"),
            }
        }
        app
    }

    async fn an_untagged_instance_starts_nothing(&self, app: &App) {
        let settings = dbroles_core::config::TriggerSettings::default();
        let mut untagged = sample("events/rds-instance-created.json");
        untagged["detail"]["SourceArn"] = json!(self.instance.arn);
        let out = handle_trigger(app, &settings, untagged).await.unwrap();
        assert_eq!(out["started"], json!([]));
        assert!(out["skipped"][0].as_str().unwrap().contains("is not tagged dbroles:provision=true"), "{out}");
    }
}

/// The fleet job of the fleet step samples: postgres instances tagged for `acme`,
/// in the account and region of the deployment; and the instance its start-job sample names.
async fn seed_fleet(aws: &aws_config::SdkConfig, deps: &Deps) {
    let rds = aws_sdk_rds::Client::new(aws);
    if rds.describe_db_instances().db_instance_identifier("inventory-db").send().await.is_err() {
        moto_instance(aws, "inventory-db", "postgres", ("postgres", "x"), &[("dbroles:org", "acme")]).await;
    }
    let fleet: dbroles_core::model::fleet::FleetRecord = serde_json::from_value(json!({
        "fleet": {
            "id": FLEET, "org_id": "acme", "created_at": "2026-11-22T10:00:00Z", "completed_at": null, "created_by": "alice",
            "request": {
                "selector": {"engines": ["postgres"], "tags": ["dbroles:org=acme"]},
                "agent_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
                "max_concurrency": 4
            },
            "status": {"phase": "running", "message": "selecting", "counts": {
                "total": 0, "pending": 0, "running": 0, "completed": 0, "failed": 0, "skipped": 0}, "not_started": []}
        },
        "execution": null
    }))
    .unwrap();
    deps.fleets.create_fleet(&fleet).await.unwrap();
}

async fn fleet_record(deps: &Deps) -> dbroles_core::model::fleet::FleetRecord {
    deps.fleets.get_fleet("acme", FLEET).await.unwrap().expect("the sample's fleet job")
}

/// Every action a function took is granted to it by `template.yaml`
/// (`GetCallerIdentity` needs no permission).
fn assert_granted(function: &str, taken: BTreeSet<String>, sample: &str) {
    assert!(!taken.is_empty(), "{sample}: {function} made no AWS call through the recorder");
    let granted = template_actions(function);
    let missing: Vec<&String> =
        taken.iter().filter(|action| *action != "sts:GetCallerIdentity" && !granted.contains(*action)).collect();
    assert!(missing.is_empty(), "{sample}: template.yaml does not grant {function} {missing:?} (it grants {granted:?})");
}

async fn security_groups_of(aws: &aws_config::SdkConfig, identifier: &str) -> Vec<String> {
    let described =
        aws_sdk_rds::Client::new(aws).describe_db_instances().db_instance_identifier(identifier).send().await.unwrap();
    described.db_instances()[0].vpc_security_groups().iter().filter_map(|g| g.vpc_security_group_id()).map(String::from).collect()
}
