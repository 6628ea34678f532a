//! One suite for both store adapters: SQLite (the local server) and DynamoDB (on moto).

use std::sync::Arc;

use dbroles_core::config::Settings;
use dbroles_core::lifecycle::jobs;
use dbroles_core::model::account::Account;
use dbroles_core::model::job::{JobRecord, JobSpec, Phase};
use dbroles_core::model::request::CreateJobRequest;
use dbroles_core::model::resource::{Resource, ResourceInput};
use dbroles_core::model::Timestamp;
use dbroles_core::store::dynamodb::DynamoStore;
use dbroles_core::store::sqlite::SqliteStore;
use dbroles_core::store::{
    AccountStore, Created, CredentialStore, Idempotency, JobQuery, JobStore, NewJob, Provisioned, ResourceStore, StoreError,
};
use dbroles_tests::{aws_config, moto_endpoint, unique};
use serde_json::json;

struct Stores {
    jobs: Arc<dyn JobStore>,
    resources: Arc<dyn ResourceStore>,
    accounts: Arc<dyn AccountStore>,
    credentials: Arc<dyn CredentialStore>,
    _dir: Option<tempfile::TempDir>,
}

async fn sqlite() -> Stores {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap());
    Stores { jobs: store.clone(), resources: store.clone(), accounts: store.clone(), credentials: store, _dir: Some(dir) }
}

async fn dynamodb() -> Stores {
    let config = aws_config(&moto_endpoint()).await;
    let store = Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), unique("store-")));
    store.create_table().await.unwrap();
    Stores { jobs: store.clone(), resources: store.clone(), accounts: store.clone(), credentials: store, _dir: None }
}

fn arn(name: &str) -> String {
    format!("arn:aws:rds:us-east-1:123456789012:db:{name}")
}

fn record(org: &str, instance: &str, engine: &str) -> JobRecord {
    let request: CreateJobRequest = serde_json::from_value(json!({
        "agent_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
        "aws": {"instance_arn": arn(instance)},
        "connection_prefix_name": "p-",
        "job_steps": []
    }))
    .unwrap();
    let spec = JobSpec { db_arn: arn(instance), db_engine: engine.into(), ..Default::default() };
    jobs::new_record(org, "tester", request, spec)
}

fn new(record: &JobRecord) -> NewJob {
    NewJob { record: record.clone(), idempotency: None, lease_until: Settings::default().lease() }
}

fn expiry() -> Timestamp {
    Settings::default().expiry()
}

async fn one_lock_per_server_whoever_asks(s: &Stores) {
    let first = record("org-a", "db1", "postgres");
    assert_eq!(s.jobs.create_job(new(&first)).await.unwrap(), Created::New);
    let held = Err(StoreError::Locked { job_id: first.id().into(), org: "org-a".into() });
    let second = record("org-a", "db1", "postgres");
    assert_eq!(s.jobs.create_job(new(&second)).await, held);
    assert_eq!(s.jobs.create_job(new(&record("org-b", "db1", "postgres"))).await, held, "another organisation waits too");
    s.jobs.create_job(new(&record("org-a", "db2", "postgres"))).await.unwrap();
    // An Aurora instance holds its cluster: a job on the cluster waits.
    let cluster = "arn:aws:rds:us-east-1:123456789012:cluster:c1";
    let member = JobRecord { lock: cluster.into(), ..record("org-b", "c1-writer", "aurora-postgresql") };
    s.jobs.create_job(new(&member)).await.unwrap();
    let on_cluster = JobRecord { lock: cluster.into(), ..record("org-a", "c1", "aurora-postgresql") };
    assert_eq!(
        s.jobs.create_job(new(&on_cluster)).await,
        Err(StoreError::Locked { job_id: member.id().into(), org: "org-b".into() })
    );

    // Finishing a job keeps its lock until its execution has ended and the holder releases it.
    let mut done = first.clone();
    done.finish(Phase::Completed, "done");
    assert!(s.jobs.finish_job(&done, expiry()).await.unwrap());
    assert!(!s.jobs.finish_job(&done, expiry()).await.unwrap(), "a job finishes once");
    assert!(!s.jobs.update_job(&first).await.unwrap(), "a finished job is not updated");
    assert_eq!(s.jobs.get_job("org-a", first.id()).await.unwrap().unwrap().job.phase(), Phase::Completed);
    assert_eq!(s.jobs.create_job(new(&second)).await, held, "finished, not yet released");
    s.jobs.release_lock(first.lock_key(), second.id()).await.unwrap();
    assert_eq!(s.jobs.create_job(new(&second)).await, held, "only the holder releases");
    s.jobs.release_lock(first.lock_key(), first.id()).await.unwrap();
    assert_eq!(s.jobs.create_job(new(&second)).await.unwrap(), Created::New, "the lock was released");
}

async fn a_lock_whose_lease_ran_out_is_taken_over(s: &Stores) {
    let vanished = record("org-a", "db9", "postgres");
    let expired = Timestamp(Timestamp::now().0 - chrono::Duration::seconds(5));
    s.jobs.create_job(NewJob { lease_until: expired, ..new(&vanished) }).await.unwrap();
    let next = record("org-b", "db9", "postgres");
    assert_eq!(s.jobs.create_job(new(&next)).await.unwrap(), Created::New);
    // The vanished job's late release leaves the new holder's lock alone.
    s.jobs.release_lock(vanished.lock_key(), vanished.id()).await.unwrap();
    let third = record("org-a", "db9", "postgres");
    assert_eq!(s.jobs.create_job(new(&third)).await, Err(StoreError::Locked { job_id: next.id().into(), org: "org-b".into() }));
}

async fn a_job_finishes_and_releases_its_server_in_one_write(s: &Stores) {
    let first = record("org-a", "db7", "postgres");
    s.jobs.create_job(new(&first)).await.unwrap();
    let mut done = first.clone();
    done.finish(Phase::Failed, "the server went away");
    assert!(s.jobs.finish_and_release(&done, expiry()).await.unwrap());
    assert_eq!(s.jobs.get_job("org-a", first.id()).await.unwrap().unwrap().job.phase(), Phase::Failed);
    let second = record("org-b", "db7", "postgres");
    assert_eq!(s.jobs.create_job(new(&second)).await.unwrap(), Created::New, "the server is free once the job reads finished");

    // A second finish (a late step) changes nothing, and leaves the new holder's lock alone.
    assert!(!s.jobs.finish_and_release(&done, expiry()).await.unwrap());
    let held = Err(StoreError::Locked { job_id: second.id().into(), org: "org-b".into() });
    assert_eq!(s.jobs.create_job(new(&record("org-a", "db7", "postgres"))).await, held);

    // A cancelled job keeps its lock until its execution ends: then the lock goes, the cancel stays.
    let mut cancelled = second.clone();
    cancelled.finish(Phase::Failed, "cancelled by alice");
    assert!(s.jobs.finish_job(&cancelled, expiry()).await.unwrap());
    let mut late = second.clone();
    late.finish(Phase::Completed, "All user roles have been successfully provisioned");
    assert!(!s.jobs.finish_and_release(&late, expiry()).await.unwrap());
    assert_eq!(s.jobs.get_job("org-b", second.id()).await.unwrap().unwrap().job.status.unwrap().message, "cancelled by alice");
    s.jobs.create_job(new(&record("org-a", "db7", "postgres"))).await.unwrap();

    // A job whose lease ran out and whose server another job took over still finishes.
    let vanished = record("org-a", "db8", "postgres");
    let expired = Timestamp(Timestamp::now().0 - chrono::Duration::seconds(5));
    s.jobs.create_job(NewJob { lease_until: expired, ..new(&vanished) }).await.unwrap();
    let next = record("org-b", "db8", "postgres");
    s.jobs.create_job(new(&next)).await.unwrap();
    let mut vanished_done = vanished.clone();
    vanished_done.finish(Phase::Failed, "timed out");
    assert!(s.jobs.finish_and_release(&vanished_done, expiry()).await.unwrap());
    assert_eq!(s.jobs.get_job("org-a", vanished.id()).await.unwrap().unwrap().job.phase(), Phase::Failed);
    let held = Err(StoreError::Locked { job_id: next.id().into(), org: "org-b".into() });
    assert_eq!(s.jobs.create_job(new(&record("org-a", "db8", "postgres"))).await, held);
}

fn account(org: &str, id: &str) -> Account {
    Account {
        account_id: id.into(),
        org_id: org.into(),
        role_arn: format!("arn:aws:iam::{id}:role/dbroles"),
        external_id: dbroles_core::model::account::external_id(org),
        assumed_arn: format!("arn:aws:sts::{id}:assumed-role/dbroles/dbroles"),
        registered_at: Timestamp::now(),
        registered_by: "alice".into(),
    }
}

async fn accounts_are_registered_per_organisation(s: &Stores) {
    for (org, id) in [("org-a", "222222222222"), ("org-a", "111111111111"), ("org-b", "111111111111")] {
        s.accounts.put_account(&account(org, id)).await.unwrap();
    }
    let listed: Vec<String> = s.accounts.list_accounts("org-a").await.unwrap().into_iter().map(|a| a.account_id).collect();
    assert_eq!(listed, ["111111111111", "222222222222"]);
    let orgs: Vec<String> = s.accounts.registrations("111111111111").await.unwrap().into_iter().map(|a| a.org_id).collect();
    assert_eq!(orgs, ["org-a", "org-b"]);
    assert_eq!(
        s.accounts.get_account("org-b", "111111111111").await.unwrap().unwrap().external_id,
        account("org-b", "1").external_id
    );
    assert!(s.accounts.get_account("org-b", "222222222222").await.unwrap().is_none(), "another organisation's");
    s.accounts.delete_account("org-a", "111111111111").await.unwrap();
    assert_eq!(s.accounts.delete_account("org-a", "111111111111").await, Err(StoreError::NotFound));
    assert!(s.accounts.get_account("org-b", "111111111111").await.unwrap().is_some(), "org-b keeps its registration");
}

async fn idempotency_replays_the_same_body_only(s: &Stores) {
    let key = |hash: &str| Idempotency { key: "k-1".into(), body_hash: hash.into(), expires_at: expiry() };
    let first = record("org-a", "db1", "postgres");
    let created = s.jobs.create_job(NewJob { idempotency: Some(key("h1")), ..new(&first) }).await.unwrap();
    assert_eq!(created, Created::New);
    let again = record("org-a", "db1", "postgres");
    let replayed = s.jobs.create_job(NewJob { idempotency: Some(key("h1")), ..new(&again) }).await.unwrap();
    assert_eq!(replayed, Created::Replayed(first.id().into()));
    let other = s.jobs.create_job(NewJob { idempotency: Some(key("h2")), ..new(&again) }).await;
    assert_eq!(other, Err(StoreError::IdempotencyMismatch));
    assert!(s.jobs.get_job("org-a", again.id()).await.unwrap().is_none(), "nothing stored");
}

async fn jobs_are_scoped_updated_and_deleted(s: &Stores) {
    let mut job = record("org-a", "db1", "mysql");
    s.jobs.create_job(new(&job)).await.unwrap();
    assert!(s.jobs.get_job("org-b", job.id()).await.unwrap().is_none(), "another organisation sees nothing");
    assert_eq!(s.jobs.delete_job("org-a", job.id()).await, Err(StoreError::Running));
    job.execution = Some("arn:aws:states:us-east-1:123456789012:execution:m:x".into());
    assert!(s.jobs.update_job(&job).await.unwrap());
    assert_eq!(s.jobs.get_job("org-a", job.id()).await.unwrap().unwrap(), job);
    job.finish(Phase::Failed, "stopped");
    assert!(s.jobs.finish_job(&job, expiry()).await.unwrap());
    assert_eq!(s.jobs.delete_job("org-b", job.id()).await, Err(StoreError::NotFound));
    s.jobs.delete_job("org-a", job.id()).await.unwrap();
    assert!(s.jobs.get_job("org-a", job.id()).await.unwrap().is_none());
    assert_eq!(s.jobs.delete_job("org-a", job.id()).await, Err(StoreError::NotFound));
}

async fn listing_is_newest_first_filtered_and_paged(s: &Stores) {
    let mut ids = Vec::new();
    for i in 0..7 {
        let mut job = record("org-a", &format!("db{i}"), if i % 2 == 0 { "postgres" } else { "mysql" });
        job.job.created_at = Timestamp(Timestamp::now().0 - chrono::Duration::minutes(10 - i));
        s.jobs.create_job(new(&job)).await.unwrap();
        if i < 3 {
            job.finish(Phase::Completed, "done");
            s.jobs.finish_job(&job, expiry()).await.unwrap();
        }
        ids.push(job);
    }
    s.jobs.create_job(new(&record("org-b", "db-b0", "postgres"))).await.unwrap();
    let newest_first: Vec<String> = ids.iter().rev().map(|j| j.id().to_string()).collect();

    let mut seen = Vec::new();
    let mut query = JobQuery { limit: 3, ..Default::default() };
    loop {
        let page = s.jobs.list_jobs("org-a", &query).await.unwrap();
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|j| j.id.clone()));
        match page.next_token {
            Some(token) => query.next_token = Some(token),
            None => break,
        }
    }
    assert_eq!(seen, newest_first);

    let listed = |query: JobQuery| {
        let jobs = s.jobs.clone();
        async move {
            let page = jobs.list_jobs("org-a", &JobQuery { limit: 50, ..query }).await.unwrap();
            page.items.into_iter().map(|j| j.id).collect::<Vec<_>>()
        }
    };
    let completed = listed(JobQuery { phase: Some(Phase::Completed), ..Default::default() }).await;
    assert_eq!(completed, newest_first[4..]);
    let mysql = listed(JobQuery { db_engine: Some("mysql".into()), ..Default::default() }).await;
    assert_eq!(mysql, [ids[5].id(), ids[3].id(), ids[1].id()]);
    let one = listed(JobQuery { db_arn: Some(arn("db4")), ..Default::default() }).await;
    assert_eq!(one, [ids[4].id()]);
    let window = listed(JobQuery {
        created_after: Some(ids[1].job.created_at),
        created_before: Some(ids[5].job.created_at),
        ..Default::default()
    })
    .await;
    assert_eq!(window, [ids[4].id(), ids[3].id(), ids[2].id()]);

    // Seed 004's paging: a page from a position, and the count of every match.
    let from_third = listed(JobQuery { skip: 2, ..Default::default() }).await;
    assert_eq!(from_third, newest_first[2..]);
    let page = s.jobs.list_jobs("org-a", &JobQuery { skip: 2, limit: 2, ..Default::default() }).await.unwrap();
    assert_eq!(page.items.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), newest_first[2..4]);
    assert!(page.next_token.is_some());
    for (query, expected) in [
        (JobQuery::default(), 7),
        (JobQuery { db_engine: Some("mysql".into()), ..Default::default() }, 3),
        (JobQuery { phase: Some(Phase::Completed), skip: 2, limit: 1, ..Default::default() }, 3),
    ] {
        assert_eq!(s.jobs.count_jobs("org-a", &query).await.unwrap(), expected, "{query:?}");
    }

    let foreign = s.jobs.list_jobs("org-b", &JobQuery { limit: 1, ..Default::default() }).await.unwrap();
    assert!(foreign.next_token.is_none());
    let first = s.jobs.list_jobs("org-a", &JobQuery { limit: 1, ..Default::default() }).await.unwrap();
    let stolen = JobQuery { limit: 1, next_token: first.next_token, ..Default::default() };
    assert_eq!(s.jobs.list_jobs("org-b", &stolen).await, Err(StoreError::BadToken), "a token is its organisation's");
    let forged = JobQuery { limit: 1, next_token: Some("not-a-token".into()), ..Default::default() };
    assert_eq!(s.jobs.list_jobs("org-a", &forged).await, Err(StoreError::BadToken));

    let stats = s.jobs.job_stats("org-a").await.unwrap();
    assert_eq!(stats.total_count, 7);
    assert_eq!(stats.by_phase["completed"], 3);
    assert_eq!(stats.by_phase["running"], 4);
    assert_eq!(stats.by_phase["failed"], 0);
    assert_eq!(stats.by_engine["postgres"], 4);
    assert_eq!(stats.by_engine["mysql"], 3);
}

async fn fifty_creates_for_one_instance_give_one_job(s: &Stores) {
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let jobs = s.jobs.clone();
            tokio::spawn(async move { jobs.create_job(new(&record("org-a", "contended", "postgres"))).await })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(Created::New) => created += 1,
            Err(StoreError::Locked { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(created, 1);
    let page = s.jobs.list_jobs("org-a", &JobQuery { limit: 100, ..Default::default() }).await.unwrap();
    assert_eq!(page.items.len(), 1);
}

async fn provisioned_instances_are_remembered_once(s: &Stores) {
    let job = record("org-a", "db1", "postgres");
    let provisioned = Provisioned {
        org: "org-a".into(),
        db_arn: arn("db1"),
        request: job.request.clone(),
        resource_id: Some("db-1".into()),
        server_arn: Some(arn("db1")),
        endpoint_host: Some("db1.example.com".into()),
    };
    s.jobs.mark_provisioned(&provisioned).await.unwrap();
    s.jobs.mark_provisioned(&provisioned).await.unwrap();
    assert_eq!(s.jobs.provisioned().await.unwrap(), vec![provisioned.clone()]);
    assert_eq!(s.jobs.get_provisioned("org-a", &arn("db1")).await.unwrap(), Some(provisioned));
    assert_eq!(s.jobs.get_provisioned("org-b", &arn("db1")).await.unwrap(), None, "another organisation's is not found");
}

fn resource(org: &str, name: &str, secret: &str) -> Resource {
    let input: ResourceInput = serde_json::from_value(json!({
        "name": name, "type": "database", "env_vars": {"HOST": "h"},
        "roles": [{"name": format!("{name}-ro"), "type": "database", "secret": {"envvar:PASSWORD": secret}}]
    }))
    .unwrap();
    input.into_resource(org, None)
}

async fn resources_keep_names_unique_and_page(s: &Stores) {
    let first = resource("org-a", "alpha", "one");
    s.resources.create_resource(&first).await.unwrap();
    assert!(matches!(s.resources.create_resource(&resource("org-a", "alpha", "two")).await, Err(StoreError::Conflict(_))));
    s.resources.create_resource(&resource("org-b", "alpha", "three")).await.unwrap();
    assert_eq!(s.resources.get_resource("org-a", "alpha").await.unwrap().unwrap(), first);
    for name in ["delta", "beta", "gamma"] {
        s.resources.put_resource(&resource("org-a", name, "x")).await.unwrap();
    }
    let mut names = Vec::new();
    let mut token = None;
    loop {
        let page = s.resources.list_resources("org-a", 3, token.as_deref()).await.unwrap();
        names.extend(page.items.into_iter().map(|r| r.name));
        match page.next_token {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    assert_eq!(names, ["alpha", "beta", "delta", "gamma"]);
    s.resources.delete_resource("org-a", "alpha").await.unwrap();
    assert_eq!(s.resources.delete_resource("org-a", "alpha").await, Err(StoreError::NotFound));
    assert!(s.resources.get_resource("org-a", "alpha").await.unwrap().is_none());
    assert!(s.resources.get_resource("org-b", "alpha").await.unwrap().is_some());
}

async fn credentials_round_trip(s: &Stores) {
    assert_eq!(s.credentials.get_credential("c-1").await.unwrap(), None);
    s.credentials.put_credential("c-1", "v1").await.unwrap();
    s.credentials.put_credential("c-1", "v2").await.unwrap();
    assert_eq!(s.credentials.get_credential("c-1").await.unwrap().as_deref(), Some("v2"));
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread")] async fn $name() { super::$name(&super::sqlite().await).await })*
        }
        mod dynamodb {
            $(#[tokio::test(flavor = "multi_thread")] async fn $name() { super::$name(&super::dynamodb().await).await })*
        }
    };
}

suite!(
    one_lock_per_server_whoever_asks,
    a_lock_whose_lease_ran_out_is_taken_over,
    a_job_finishes_and_releases_its_server_in_one_write,
    accounts_are_registered_per_organisation,
    idempotency_replays_the_same_body_only,
    jobs_are_scoped_updated_and_deleted,
    listing_is_newest_first_filtered_and_paged,
    fifty_creates_for_one_instance_give_one_job,
    provisioned_instances_are_remembered_once,
    resources_keep_names_unique_and_page,
    credentials_round_trip,
);

#[cfg(unix)]
#[test]
fn the_embedded_store_is_private_and_an_existing_one_is_tightened() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join(".dbroles");
    let file = dir.join("dbroles.db");
    drop(SqliteStore::open(&file).unwrap());
    assert_eq!((mode(&dir), mode(&file)), (0o700, 0o600));
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    drop(SqliteStore::open(&file).unwrap());
    assert_eq!((mode(&dir), mode(&file)), (0o700, 0o600), "an existing store's modes are tightened");
    dbroles_core::auth::LocalTokens::load_or_create(&dir).unwrap();
    assert_eq!(mode(&dir.join("token.key")), 0o600);
}
