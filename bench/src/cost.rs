//! The cost of 1,000 jobs, from one real job: the definition run by the local
//! executor against moto (DynamoDB, RDS, Secrets Manager) and the machine's
//! PostgreSQL, counting state transitions, each Task's duration, and every
//! DynamoDB request with its size.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use dbroles_core::config::{Config, Settings};
use dbroles_core::engine::TlsConfig;
use dbroles_core::executor::Local;
use dbroles_core::executor::{Executor, Progress};
use dbroles_core::lifecycle::jobs;
use dbroles_core::model::account::Access;
use dbroles_core::model::job::{JobSpec, Phase};
use dbroles_core::store::dynamodb::DynamoStore;
use dbroles_core::store::NewJob;
use serde_json::json;

use super::Row;

/// us-east-1 list prices.
const LAMBDA_GB_SECOND: f64 = 0.000_013_333_4;
const LAMBDA_REQUEST: f64 = 0.20 / 1e6;
const STATE_TRANSITION: f64 = 0.025 / 1000.0;
const WRITE_UNIT: f64 = 0.625 / 1e6;
const READ_UNIT: f64 = 0.125 / 1e6;
/// The template's MemorySize.
const LAMBDA_GB: f64 = 0.25;

/// DynamoDB requests as the table bills them: a write unit per KB written
/// (twice in a transaction), a read unit per read of an item under 4 KB.
#[derive(Clone, Debug, Default)]
struct Requests(Arc<Mutex<Counts>>);

#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    requests: u64,
    read_units: u64,
    write_units: u64,
}

impl Intercept for Requests {
    fn name(&self) -> &'static str {
        "dbroles-bench-requests"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        let operation = request.headers().get("x-amz-target").unwrap_or_default().rsplit('.').next().unwrap_or_default();
        let kilobytes = request.body().bytes().map_or(1, |b| b.len().div_ceil(1024)) as u64;
        let mut counts = self.0.lock().unwrap();
        counts.requests += 1;
        match operation {
            "GetItem" | "Query" | "Scan" => counts.read_units += 1,
            "PutItem" | "UpdateItem" | "DeleteItem" => counts.write_units += kilobytes,
            "TransactWriteItems" => counts.write_units += 2 * kilobytes,
            _ => {}
        }
        Ok(())
    }
}

/// A PostgreSQL instance in moto whose master secret holds the local server's
/// credentials: its endpoint host and ARN.
async fn instance(aws: &aws_config::SdkConfig) -> anyhow::Result<(String, String)> {
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let identifier = format!("bench-{suffix}");
    let created = aws_sdk_rds::Client::new(aws)
        .create_db_instance()
        .db_instance_identifier(&identifier)
        .engine("postgres")
        .db_instance_class("db.t3.micro")
        .allocated_storage(20)
        .master_username("postgres")
        .manage_master_user_password(true)
        .send()
        .await
        .context("creating the instance in moto")?
        .db_instance
        .context("no instance")?;
    let secret = created.master_user_secret.and_then(|s| s.secret_arn).context("no master secret")?;
    aws_sdk_secretsmanager::Client::new(aws)
        .put_secret_value()
        .secret_id(secret)
        .secret_string(json!({"username": "postgres", "password": "trust"}).to_string())
        .send()
        .await?;
    let host = created.endpoint.and_then(|e| e.address).context("no endpoint")?;
    let arn = created.db_instance_arn.context("no ARN")?;
    Ok((host, arn))
}

pub async fn run(moto: &str, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(moto)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new("bench", "bench", None, None, "bench"))
        .load()
        .await;
    let (host, arn) = instance(&aws).await?;
    let config = Config {
        endpoint_overrides: HashMap::from([(host, "127.0.0.1:5432".to_string())]),
        settings: Settings { role_prefix: "dbroles_cost".into(), tls: TlsConfig::disabled(), ..Settings::default() },
        // The measured run keeps credentials in Secrets Manager, as the figures in the README were taken.
        credentials: dbroles_core::config::CredentialsStore::SecretsManager,
        ..Config::new(format!("dbroles-bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]))
    };
    let requests = Requests::default();
    let dynamodb =
        aws_sdk_dynamodb::Client::from_conf(aws_sdk_dynamodb::config::Builder::from(&aws).interceptor(requests.clone()).build());
    let store = Arc::new(DynamoStore::new(dynamodb, &config.table));
    store.create_table().await?;
    let mut deps = dbroles_core::wiring::aws(&config, &aws).await?;
    (deps.jobs, deps.resources) = (store.clone(), store);

    let request = serde_json::from_value(json!({
        "agent_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
        "aws": {"instance_arn": arn},
        "connection_prefix_name": "bench-",
        "job_steps": ["create-connections"]
    }))?;
    let spec = JobSpec { db_arn: arn.clone(), db_engine: "postgres".into(), ..Default::default() };
    let mut record = jobs::new_record("bench", "bench", request, spec);
    // What the API Lambda does: the job, with how it reaches the account, and its lock.
    let account = deps.inventory.home_account().await?;
    record.access = Some(Access::home(&account, "bench"));
    record.lock = arn.clone();
    let lease_until = deps.settings.lease();
    deps.jobs.create_job(NewJob { record: record.clone(), idempotency: None, lease_until }).await?;

    let entered: Mutex<Vec<(String, Instant)>> = Mutex::default();
    let progress = |event: Progress<'_>| match event {
        Progress::Entered(state) | Progress::Retrying { state, .. } => {
            entered.lock().unwrap().push((state.to_string(), Instant::now()))
        }
        Progress::Caught { .. } => {}
    };
    let executor = Executor::provision(0.0);
    let tasks = executor.task_states();
    let executed = Local::new(executor, deps.clone()).execute(&record, &progress).await;
    let finished = Instant::now();
    // The job's roles are the local PostgreSQL's: dropped whatever the run did.
    crate::provisioning::drop_roles("dbroles_cost").await?;
    executed?;
    let job = deps.jobs.get_job("bench", record.id()).await?.context("the job is gone")?.job;
    anyhow::ensure!(job.phase() == Phase::Completed, "the cost run's job did not complete: {:?}", job.status);

    let counts = *requests.0.lock().unwrap();
    report(&entered.into_inner().unwrap(), finished, &tasks, counts, rows);
    Ok(())
}

/// The rows: what one job took, and what 1,000 cost.
fn report(
    entered: &[(String, Instant)],
    finished: Instant,
    tasks: &std::collections::BTreeSet<String>,
    counts: Counts,
    rows: &mut Vec<Row>,
) {
    // A Task lasts until the next state is entered; Lambda bills each in whole milliseconds.
    let transitions = entered.len() as f64;
    let mut invocations = 0.0;
    let mut billed = Duration::ZERO;
    for (i, (state, at)) in entered.iter().enumerate() {
        if tasks.contains(state.as_str()) {
            let until = entered.get(i + 1).map_or(finished, |(_, next)| *next);
            invocations += 1.0;
            billed += Duration::from_millis((until - *at).as_secs_f64().mul_add(1000.0, 0.999) as u64);
        }
    }
    let Counts { requests: dynamo_requests, read_units: reads, write_units: writes } = counts;
    let per_thousand = |dollars: f64| format!("${:.4}", dollars * 1000.0);
    let lambda = billed.as_secs_f64() * LAMBDA_GB * LAMBDA_GB_SECOND + invocations * LAMBDA_REQUEST;
    let states = transitions * STATE_TRANSITION;
    let dynamo = writes as f64 * WRITE_UNIT + reads as f64 * READ_UNIT;
    rows.push(Row::new(
        "one job, measured (PostgreSQL, create-connections)",
        format!(
            "{transitions} transitions; {invocations} Task invocations, {} ms billed at 256 MB; {dynamo_requests} DynamoDB requests ({writes} write units, {reads} read units)",
            billed.as_millis()
        ),
        "",
    ));
    rows.push(Row::new("cost per 1,000 jobs: Step Functions", per_thousand(states), ""));
    rows.push(Row::new("cost per 1,000 jobs: Lambda (steps)", per_thousand(lambda), ""));
    rows.push(Row::new("cost per 1,000 jobs: DynamoDB", per_thousand(dynamo), ""));
    rows.push(Row::new("cost per 1,000 jobs: total", per_thousand(states + lambda + dynamo), ""));
}
