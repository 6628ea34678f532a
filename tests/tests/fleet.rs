//! Fleet jobs on the local executor: a fleet of 20 PostgreSQL clusters (RDS-like
//! masters, SCRAM) and 3 MariaDB servers of the test's own, registered across two
//! accounts, and a dead instance. One `POST /dbroles/fleet-jobs` provisions them
//! all through the fleet definition's Map, at most 8 at once; then a cancel
//! mid-way stops the next fleet job and leaves no lock behind.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dbroles_core::auth::{AuthError, Caller};
use dbroles_core::deps::{App, Deps};
use dbroles_core::executor::Local;
use dbroles_core::executor::{Executor, Progress};
use dbroles_core::inventory::local::{LocalInstance, LocalInventory, LocalRole, LOCAL_ACCOUNT};
use dbroles_core::lifecycle::accounts;
use dbroles_core::lifecycle::jobs::{self, Stored};
use dbroles_core::model::account::RegisterAccount;
use dbroles_core::model::request::CreateJobRequest;
use dbroles_core::secrets::SecretRef;
use dbroles_core::store::sqlite::SqliteStore;
use dbroles_tests::*;
use secrecy::ExposeSecret;
use serde_json::{json, Value};

const OTHER_ACCOUNT: &str = "111111111111";
const PG_CLUSTERS: usize = 20;
const MARIADB_SERVERS: usize = 3;

fn admin() -> Result<Caller, AuthError> {
    Ok(Caller { sub: "alice".into(), org: ORG.into(), groups: vec!["admin".into()] })
}

/// The servers of the fleet, and the local inventory listing them (and a dead instance).
struct Fleet {
    postgres: Vec<(String, PgCluster)>,
    mariadb: Vec<(String, MariaDbServer)>,
    dead: String,
    inventory: LocalInventory,
}

fn arn(account: &str, id: &str) -> String {
    format!("arn:aws:rds:us-east-1:{account}:db:{id}")
}

impl Fleet {
    async fn start() -> Self {
        let clusters: Vec<_> = (0..PG_CLUSTERS).map(|_| tokio::task::spawn_blocking(PgCluster::start)).collect();
        let mut postgres = Vec::new();
        for (i, cluster) in clusters.into_iter().enumerate() {
            let cluster = cluster.await.unwrap();
            cluster.rds_like().await;
            let account = if i % 2 == 0 { LOCAL_ACCOUNT } else { OTHER_ACCOUNT };
            postgres.push((arn(account, &format!("pg-{i:02}")), cluster));
        }
        let mut mariadb = Vec::new();
        for i in 0..MARIADB_SERVERS {
            let server = MariaDbServer::start_for(&["127.0.0.1"]).await;
            let mut root = server.connect("root", "").await.unwrap();
            mysql_async::prelude::Queryable::query_drop(&mut root, "CREATE DATABASE app; CREATE TABLE app.items (id int)")
                .await
                .unwrap();
            let account = if i % 2 == 0 { OTHER_ACCOUNT } else { LOCAL_ACCOUNT };
            mariadb.push((arn(account, &format!("maria-{i}")), server));
        }
        let dead = arn(LOCAL_ACCOUNT, "dead");
        let mut instances: Vec<LocalInstance> = postgres.iter().map(|(arn, cluster)| cluster.local_instance(arn)).collect();
        instances.extend(
            mariadb.iter().map(|(arn, server)| LocalInstance::on_loopback(arn, "mariadb", server.port, "root").tagged_for(ORG)),
        );
        instances.push(LocalInstance::on_loopback(&dead, "postgres", free_port(), "master").tagged_for(ORG));
        let role = LocalRole {
            arn: format!("arn:aws:iam::{OTHER_ACCOUNT}:role/dbroles"),
            external_id: dbroles_core::model::account::external_id(ORG),
        };
        let inventory = LocalInventory::new(instances).unwrap().with_roles(vec![role]);
        Self { postgres, mariadb, dead, inventory }
    }

    fn instances(&self) -> usize {
        self.postgres.len() + self.mariadb.len() + 1
    }

    /// Every role of the job on `arn` logs in with the credentials in the store.
    async fn roles_log_in(&self, deps: &Deps, arn: &str, job: &Value, prefix: &str) {
        for level in ["ro", "rw", "ddl"] {
            let user = format!("{prefix}_{level}");
            let secret = SecretRef {
                org: ORG.into(),
                instance_id: arn.rsplit(':').next().unwrap().into(),
                instance_arn: arn.into(),
                job_id: job["id"].as_str().unwrap().into(),
                user: user.clone(),
                host: String::new(),
            };
            let stored = deps.secrets.read(&deps.secrets.secret_id(&secret)).await.unwrap();
            let password = stored.unwrap_or_else(|| panic!("{user} of {arn} is stored")).password;
            if let Some((_, cluster)) = self.postgres.iter().find(|(a, _)| a == arn) {
                cluster.client(&user, password.expose_secret(), "app").await.unwrap_or_else(|e| panic!("{user} on {arn}: {e}"));
            } else {
                let (_, server) = self.mariadb.iter().find(|(a, _)| a == arn).unwrap();
                server.connect(&user, password.expose_secret()).await.unwrap_or_else(|e| panic!("{user} on {arn}: {e}"));
            }
        }
    }
}

/// The local deployment over the fleet, its organisation's other account
/// registered, reporting how many jobs run at once.
struct Deployment {
    deps: Deps,
    app: App,
    prefix: String,
    running: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
}

impl Deployment {
    async fn start(fleet: &Fleet) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("dbroles.db")).unwrap());
        let prefix = unique("f");
        let deps = dbroles_core::wiring::local(store, Arc::new(fleet.inventory.clone()), settings(&prefix));
        let role_arn = format!("arn:aws:iam::{OTHER_ACCOUNT}:role/dbroles");
        accounts::register(
            accounts::Tenancy::of(&deps),
            ORG,
            "alice",
            &OTHER_ACCOUNT.parse().unwrap(),
            RegisterAccount { role_arn },
        )
        .await
        .unwrap();
        let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (now, most) = (running.clone(), peak.clone());
        // A job runs from its Resolve to its Finalize.
        let reporter = Arc::new(move |progress: Progress<'_>| match progress {
            Progress::Entered("Resolve") => {
                let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(running, Ordering::SeqCst);
            }
            Progress::Entered("Finalize") => {
                now.fetch_sub(1, Ordering::SeqCst);
            }
            _ => {}
        });
        let local = Local::new(Executor::provision(0.01), deps.clone()).reporting(reporter);
        let app = App::new(&deps, Arc::new(local));
        Self { deps, app, prefix, running, peak, _dir: dir }
    }

    async fn post(&self, max_concurrency: u32) -> String {
        self.post_in("run", max_concurrency).await
    }

    async fn post_in(&self, mode: &str, max_concurrency: u32) -> String {
        let body = json!({
            "selector": {},
            "agent_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
            "connection_prefix_name": "fleet-",
            "job_steps": ["create-connections"],
            "max_concurrency": max_concurrency,
            "mode": mode,
        });
        let (status, created) = call_json(&self.app, admin(), "POST", "/dbroles/fleet-jobs", Some(body)).await;
        assert_eq!(status, http::StatusCode::ACCEPTED, "{created}");
        created["fleet_job_id"].as_str().unwrap().to_string()
    }

    async fn get(&self, id: &str) -> Value {
        let (status, fleet) = call_json(&self.app, admin(), "GET", &format!("/dbroles/fleet-jobs/{id}?limit=100"), None).await;
        assert_eq!(status, http::StatusCode::OK, "{fleet}");
        fleet
    }

    async fn wait(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..1200 {
            let fleet = self.get(id).await;
            if done(&fleet) {
                return fleet;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("fleet job {id}: {}", self.get(id).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_job_provisions_every_instance_of_two_accounts_at_most_eight_at_once() {
    let fleet = Fleet::start().await;
    let deployment = Deployment::start(&fleet).await;

    let id = deployment.post(8).await;
    let finished = deployment.wait(&id, |fleet| fleet["status"]["phase"] != "running").await;

    // One dead instance failed; every other completed.
    let counts = &finished["status"]["counts"];
    let total = fleet.instances() as u64;
    assert_eq!(counts["total"], total, "{finished}");
    assert_eq!((counts["completed"].as_u64(), counts["failed"].as_u64()), (Some(total - 1), Some(1)), "{finished}");
    assert_eq!((counts["pending"].as_u64(), counts["running"].as_u64(), counts["skipped"].as_u64()), (Some(0), Some(0), Some(0)));
    assert_eq!(finished["status"]["phase"], "failed", "a failed instance fails the fleet job");
    assert_eq!(finished["status"]["message"], format!("{total} instances: {} completed, 1 failed, 0 skipped", total - 1));
    let peak = deployment.peak.load(Ordering::SeqCst);
    assert!((2..=8).contains(&peak), "max_concurrency 8 bounds the jobs running at once, and they ran in parallel: {peak}");
    assert_eq!(deployment.running.load(Ordering::SeqCst), 0);

    // Each of the fleet job's jobs is an ordinary job: GET /dbroles/jobs/{id} shows it.
    let jobs = finished["jobs"].as_array().unwrap();
    assert_eq!(jobs.len() as u64, total);
    for job in jobs {
        assert_eq!(job["fleet_job_id"], id.as_str());
        let arn = job["spec"]["db_arn"].as_str().unwrap();
        let (status, alone) =
            call_json(&deployment.app, admin(), "GET", &format!("/dbroles/jobs/{}", job["id"].as_str().unwrap()), None).await;
        assert_eq!((status, &alone), (http::StatusCode::OK, job));
        if arn == fleet.dead {
            assert_eq!(job["status"]["phase"], "failed");
            assert!(job["status"]["message"].as_str().unwrap().contains("connect"), "{job}");
        } else {
            assert_eq!(job["status"]["phase"], "completed", "{job}");
            fleet.roles_log_in(&deployment.deps, arn, job, &deployment.prefix).await;
        }
    }
    // Each instance has its own connections: <connection_prefix_name><instance id>-<level>.
    let resource = deployment.deps.resources.get_resource(ORG, "pg-07").await.unwrap().expect("the instance's resource");
    let names: Vec<&str> = resource.roles.iter().map(|role| role.input.name.as_str()).collect();
    assert_eq!(names, ["fleet-pg-07-ro", "fleet-pg-07-rw", "fleet-pg-07-ddl"]);

    // The listing shows it, and the jobs listing filters by it.
    let (_, list) = call_json(&deployment.app, admin(), "GET", "/dbroles/fleet-jobs", None).await;
    assert_eq!(list["items"][0]["id"], id.as_str());
    let (_, children) =
        call_json(&deployment.app, admin(), "GET", &format!("/dbroles/jobs?fleet_job_id={id}&phase=failed"), None).await;
    assert_eq!(children["total_count"], 1, "{children}");

    a_fleet_plan_counts_instances_in_sync_and_drifted(&fleet, &deployment).await;
    a_cancel_stops_new_jobs_and_leaves_no_lock(&fleet, &deployment).await;
}

async fn a_fleet_plan_counts_instances_in_sync_and_drifted(fleet: &Fleet, deployment: &Deployment) {
    let total = fleet.instances() as u64;
    let plan = || async {
        let id = deployment.post_in("plan", 8).await;
        deployment.wait(&id, |fleet| fleet["status"]["phase"] != "running").await
    };
    let finished = plan().await;
    let counts = &finished["status"]["counts"];
    assert_eq!((counts["in_sync"].as_u64(), counts["drifted"].as_u64()), (Some(total - 1), Some(0)), "{finished}");

    // A grant made by hand on one instance: that one has drifted, and its job names the change.
    let (drifted, cluster) = &fleet.postgres[0];
    let grant = format!("GRANT INSERT ON public.items TO {}_ro", deployment.prefix);
    cluster.superuser("app").await.batch_execute(&grant).await.unwrap();
    let finished = plan().await;
    let counts = &finished["status"]["counts"];
    assert_eq!((counts["in_sync"].as_u64(), counts["drifted"].as_u64()), (Some(total - 2), Some(1)), "{finished}");
    let message = finished["status"]["message"].as_str().unwrap();
    assert!(message.ends_with(&format!("({} in sync, 1 drifted)", total - 2)), "{message}");
    let job = finished["jobs"].as_array().unwrap().iter().find(|job| job["spec"]["db_arn"] == drifted.as_str()).unwrap();
    assert_eq!(job["status"]["result"][0]["changes"], json!(["revoke INSERT on table app.public.items (not in level ro)"]));
}

async fn a_cancel_stops_new_jobs_and_leaves_no_lock(fleet: &Fleet, deployment: &Deployment) {
    let id = deployment.post(2).await;
    deployment.wait(&id, |fleet| fleet["status"]["counts"]["completed"].as_u64() >= Some(2)).await;
    let (status, cancelled) =
        call_json(&deployment.app, admin(), "POST", &format!("/dbroles/fleet-jobs/{id}/cancel"), None).await;
    assert_eq!(status, http::StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"]["phase"], "failed");
    assert_eq!(cancelled["status"]["message"], "cancelled by alice");
    let (again, _) = call_json(&deployment.app, admin(), "POST", &format!("/dbroles/fleet-jobs/{id}/cancel"), None).await;
    assert_eq!(again, http::StatusCode::CONFLICT);

    let after = deployment.get(&id).await;
    let started = after["jobs"].as_array().unwrap().len();
    assert!(started < fleet.instances(), "the cancel stopped the fleet job before its last instance: {after}");
    for job in after["jobs"].as_array().unwrap() {
        assert_ne!(job["status"]["phase"], "running", "no job of a cancelled fleet job runs on: {job}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(deployment.get(&id).await["jobs"].as_array().unwrap().len(), started, "no job started after the cancel");

    // No lock is left: a job can be created on every instance.
    let arns = fleet.postgres.iter().map(|(arn, _)| arn).chain(fleet.mariadb.iter().map(|(arn, _)| arn));
    for arn in arns {
        let request: CreateJobRequest = serde_json::from_value(json!({
            "agent_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
            "aws": {"instance_arn": arn},
            "connection_prefix_name": "after-",
        }))
        .unwrap();
        let created = jobs::create(&deployment.deps, ORG, "alice", request, None, None).await;
        assert!(matches!(created, Ok(Stored::New(_))), "{arn} is free after the cancel: {created:?}");
    }
    let (deleted, _) = call_json(&deployment.app, admin(), "DELETE", &format!("/dbroles/fleet-jobs/{id}"), None).await;
    assert_eq!(deleted, http::StatusCode::NO_CONTENT);
    let (gone, _) = call_json(&deployment.app, admin(), "GET", &format!("/dbroles/fleet-jobs/{id}"), None).await;
    assert_eq!(gone, http::StatusCode::NOT_FOUND);
}
