//! Transient failures are retried by the state machine, not turned into failed
//! jobs: a throttled `GetSecretValue` inside the Provision step, and a database
//! that resets the first connection (an instance failing over). Each runs on
//! moto's Step Functions (the proxy injects the fault) and on the local executor.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dbroles_core::config::Config;
use dbroles_core::config::CredentialsStore;
use dbroles_core::deps::{App, Deps};
use dbroles_core::executor::Local;
use dbroles_core::executor::{Executor, Progress};
use dbroles_core::lifecycle::jobs;
use dbroles_core::model::job::{Job, Phase};
use dbroles_core::model::request::CreateJobRequest;
use dbroles_core::secrets::aws::AwsSecrets;
use dbroles_core::secrets::SecretStore;
use dbroles_core::steps::ErrorType;
use dbroles_tests::*;
use secrecy::ExposeSecret;
use serde_json::json;

/// The SDK's own attempts at a throttled call (standard retry mode): throttling
/// that outlasts them reaches the step, which must fail `Retryable`.
const SDK_ATTEMPTS: u32 = 3;

/// A PostgreSQL instance in moto behind an endpoint that may reset its first
/// connections, and the steps' AWS calls going through the fault-injecting proxy.
struct Rig {
    moto: MotoExecutor,
    cluster: PgCluster,
    flaky: FlakyPort,
    aws: aws_config::SdkConfig,
    config: Config,
    prefix: String,
    arn: String,
}

async fn rig(resets: usize) -> Rig {
    let cluster = PgCluster::start();
    cluster.rds_like().await;
    let flaky = FlakyPort::start(cluster.port, resets).await;
    let instance_id = unique("orders-");
    let host = format!("{instance_id}.aaaaaaaaaa.us-east-1.rds.amazonaws.com");
    let prefix = unique("r");
    let settings = settings(&prefix);
    let config = Config {
        endpoint_overrides: HashMap::from([(host, format!("127.0.0.1:{}", flaky.port))]),
        settings,
        credentials: CredentialsStore::SecretsManager,
        ..Config::new(unique("jobs-"))
    };
    let steps_config = config.clone();
    let moto = MotoExecutor::start(
        |_, proxy| async move { dbroles_core::wiring::aws(&steps_config, &aws_config(&proxy).await).await.unwrap() },
        HashMap::new(),
    )
    .await;
    let aws = aws_config(&moto.endpoint).await;
    create_table(&aws, &config.table).await;
    let instance = moto_instance(&aws, &instance_id, "postgres", ("master", RDS_MASTER_PASSWORD), &[]).await;
    Rig { moto, cluster, flaky, aws, config, prefix, arn: instance.arn }
}

impl Rig {
    /// The steps' dependencies, their AWS calls through the proxy (where faults are injected).
    async fn deps(&self) -> Deps {
        dbroles_core::wiring::aws(&self.config, &aws_config(&self.moto.proxy).await).await.unwrap()
    }

    fn request(&self) -> CreateJobRequest {
        serde_json::from_value(json!({
            "agent_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
            "aws": {"instance_arn": self.arn},
            "connection_prefix_name": "orders-",
            "job_steps": []
        }))
        .unwrap()
    }

    /// The job started through the lifecycle on moto's Step Functions, once it has finished.
    async fn run_on_step_functions(&self) -> Job {
        let machine = provision_state_machine(&self.aws).await;
        let config = Config { state_machine_arn: Some(machine), ..self.config.clone() };
        let deps = dbroles_core::wiring::aws(&config, &self.aws).await.unwrap();
        let app = dbroles_core::wiring::aws_app(&config, &deps, &self.aws).unwrap();
        let id = jobs::start(&app, "acme", "alice", self.request(), None).await.unwrap();
        finished(&app, &id).await
    }

    /// The same job carried out by the local executor; every retry it reported.
    async fn run_locally(&self, on_entered: impl Fn(&str) + Send + Sync + 'static) -> (Job, Vec<(String, ErrorType)>) {
        let retries = Arc::new(Mutex::new(Vec::new()));
        let seen = retries.clone();
        let reporter = Arc::new(move |progress: Progress<'_>| match progress {
            Progress::Entered(state) => on_entered(state),
            Progress::Retrying { state, error, .. } => seen.lock().unwrap().push((state.to_string(), error.error_type)),
            Progress::Caught { .. } => {}
        });
        let deps = self.deps().await;
        let local = Arc::new(Local::new(Executor::provision(0.01), deps.clone()).reporting(reporter));
        let app = App::new(&deps, local.clone());
        let id = jobs::start(&app, "acme", "alice", self.request(), None).await.unwrap();
        local.wait(&dbroles_core::workflow::Workflow::execution_id(local.as_ref(), &id)).await;
        let job = jobs::find(app.deps.jobs.as_ref(), "acme", &id).await.unwrap().job;
        let retries = retries.lock().unwrap().clone();
        (job, retries)
    }

    fn provision_invocations(&self) -> usize {
        self.moto.invocations.lock().unwrap().iter().filter(|(function, _)| function == "dbroles-provision").count()
    }

    /// Every role logs in with the password a consumer reads from Secrets Manager.
    async fn roles_log_in(&self, job: &Job) {
        assert_eq!(job.phase(), Phase::Completed, "{:?}", job.status);
        let store = AwsSecrets::new(aws_sdk_secretsmanager::Client::new(&self.aws), "dbroles");
        for result in &job.status.as_ref().unwrap().result {
            let info = result.credentials_info.as_ref().unwrap();
            let stored = store.read(&info.secret_id).await.unwrap().expect("the role's secret is stored");
            assert!(result.user_role.starts_with(&self.prefix));
            self.cluster.client(&result.user_role, stored.password.expose_secret(), "postgres").await.expect("the role logs in");
        }
    }
}

async fn finished(app: &App, id: &str) -> Job {
    for _ in 0..600 {
        let job = jobs::find(app.deps.jobs.as_ref(), "acme", id).await.unwrap().job;
        if job.phase() != Phase::Running {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {id} still running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_throttled_get_secret_value_in_provision_is_retried_by_step_functions() {
    let rig = rig(0).await;
    rig.moto.faults.throttle_from("dbroles-provision", "GetSecretValue", SDK_ATTEMPTS);
    let job = rig.run_on_step_functions().await;
    rig.roles_log_in(&job).await;
    assert_eq!(rig.provision_invocations(), 2, "Provision failed Retryable once, and Step Functions ran it again");
    assert_eq!(rig.moto.faults.pending(), 0, "every injected throttle was met");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_throttled_get_secret_value_in_provision_is_retried_locally() {
    let rig = rig(0).await;
    let (faults, armed) = (rig.moto.faults.clone(), AtomicBool::new(false));
    let (job, retries) = rig
        .run_locally(move |state| {
            if state == "Provision" && !armed.swap(true, Ordering::SeqCst) {
                faults.throttle("GetSecretValue", SDK_ATTEMPTS);
            }
        })
        .await;
    rig.roles_log_in(&job).await;
    assert_eq!(retries, [("Provision".to_string(), ErrorType::Retryable)]);
    assert_eq!(rig.moto.faults.pending(), 0, "every injected throttle was met");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_that_resets_the_first_connection_is_retried_by_step_functions() {
    let rig = rig(1).await;
    let job = rig.run_on_step_functions().await;
    rig.roles_log_in(&job).await;
    assert_eq!(rig.provision_invocations(), 2, "Provision failed Retryable once, and Step Functions ran it again");
    assert!(rig.flaky.accepted() > 1, "the first connection was reset, later ones went through");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_that_resets_the_first_connection_is_retried_locally() {
    let rig = rig(1).await;
    let (job, retries) = rig.run_locally(|_| {}).await;
    rig.roles_log_in(&job).await;
    assert_eq!(retries, [("Provision".to_string(), ErrorType::Retryable)]);
}
