//! A hostile tenant: an admin of organisation B tries, as B's tokens allow, every
//! route and trigger on organisation A's account and instances, on the embedded
//! store (the local server) and on moto. Each attempt gets 403 or 404, and the
//! store and the database show that nothing changed.

use std::sync::Arc;
use std::time::Duration;

use dbroles_core::auth::{AuthError, Caller};
use dbroles_core::config::TriggerSettings;
use dbroles_core::config::{Config, Settings};
use dbroles_core::deps::App;
use dbroles_core::engine::TlsConfig;
use dbroles_core::executor::Executor;
use dbroles_core::executor::Local;
use dbroles_core::inventory::local::{LocalInstance, LocalInventory, LocalRole};
use dbroles_core::lifecycle::fleet;
use dbroles_core::lifecycle::jobs::{self, Naming};
use dbroles_core::model::account::{external_id, AccountPolicy};
use dbroles_core::model::fleet::ChildInput;
use dbroles_core::model::job::DbTag;
use dbroles_core::model::job::Phase;
use dbroles_core::store::sqlite::SqliteStore;
use dbroles_core::store::{JobQuery, Provisioned};
use dbroles_core::triggers;
use dbroles_tests::*;
use http::StatusCode;
use serde_json::{json, Value};

const A: &str = "org-a";
const B: &str = "org-b";
const A_ACCOUNT: &str = "111111111111";

fn admin(org: &str) -> Result<Caller, AuthError> {
    Ok(Caller { sub: format!("{org}-admin"), org: org.into(), groups: vec!["admin".into()] })
}

fn request(arn: &str, extra: Value) -> Value {
    let mut request = json!({
        "agent_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
        "aws": {"instance_arn": arn},
        "connection_prefix_name": "orders-",
        "job_steps": ["create-connections"]
    });
    if let (Value::Object(into), Value::Object(from)) = (&mut request, extra) {
        into.extend(from);
    }
    request
}

fn role_arn(account: &str) -> String {
    format!("arn:aws:iam::{account}:role/dbroles")
}

async fn wait_finished(app: &App, org: &str, id: &str) -> Value {
    for _ in 0..300 {
        let (status, job) = call_json(app, admin(org), "GET", &format!("/dbroles/jobs/{id}"), None).await;
        assert_eq!(status, StatusCode::OK, "{job}");
        if job["status"]["phase"] != "running" {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {id} still running")
}

/// Every job of `org`, as its store holds them.
async fn jobs_of(app: &App, org: &str) -> Vec<String> {
    let page = app.deps.jobs.list_jobs(org, &JobQuery { limit: 100, ..Default::default() }).await.unwrap();
    page.items.into_iter().map(|job| job.id).collect()
}

/// The password verifiers of the roles `prefix_*`: what a password change would change.
async fn verifiers(prefix: &str) -> Vec<(String, String)> {
    let client = pg_connect(5432, "postgres", "", "postgres").await.unwrap();
    let rows = client
        .query("SELECT rolname::text, rolpassword FROM pg_authid WHERE rolname LIKE $1 ORDER BY 1", &[&format!("{prefix}\\_%")])
        .await
        .unwrap();
    rows.iter().map(|row| (row.get(0), row.get(1))).collect()
}

/// The RDS event of a new instance, as the tag rule delivers it.
fn instance_created(arn: &str) -> Value {
    json!({
        "version": "0", "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
        "detail-type": "RDS DB Instance Event", "source": "aws.rds",
        "account": A_ACCOUNT, "time": "2026-11-22T10:00:00Z", "region": "us-east-1", "resources": [arn],
        "detail": {"EventCategories": ["creation"], "SourceType": "DB_INSTANCE", "SourceArn": arn,
                   "Date": "2026-11-22T10:00:00Z", "Message": "DB instance created", "EventID": "RDS-EVENT-0005"}
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn on_the_embedded_store_another_organisation_reaches_nothing_of_an_account_it_did_not_register() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap());
    // A's instance is the machine's PostgreSQL, tagged by someone to hand it to B.
    let arn = format!("arn:aws:rds:us-east-1:{A_ACCOUNT}:db:a-orders");
    let tags = [("dbroles:provision", "true"), ("dbroles:org", B)];
    let instance = LocalInstance {
        tags: tags.iter().map(|(key, value)| DbTag { key: (*key).into(), value: (*value).into() }).collect(),
        ..LocalInstance::on_loopback(&arn, "postgres", 5432, "postgres")
    };
    // A's role trusts A's ExternalId, as A's administrator set it up.
    let role = LocalRole { arn: role_arn(A_ACCOUNT), external_id: external_id(A) };
    let inventory = Arc::new(LocalInventory::new(vec![instance]).unwrap().with_roles(vec![role]));
    let prefix = unique("t");
    let settings = Settings {
        accounts: AccountPolicy { home_orgs: vec![A.into(), B.into()], role_name: None, ..Default::default() },
        ..settings(&prefix)
    };
    let deps = dbroles_core::wiring::local(store, inventory, settings);
    let app = App::new(&deps, Arc::new(Local::new(Executor::provision(0.01), deps.clone())));

    // B, naming A's role first, is refused by its trust; A registers its account;
    // then the account is A's, and B's attempt is a 409 naming nobody.
    let register = json!({"role_arn": role_arn(A_ACCOUNT)});
    let uri = format!("/dbroles/accounts/{A_ACCOUNT}");
    let (status, refused) = call_json(&app, admin(B), "PUT", &uri, Some(register.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let message = refused["message"].as_str().unwrap();
    assert!(message.contains(&format!("with ExternalId {}", external_id(B))), "{message}");
    let (status, account) = call_json(&app, admin(A), "PUT", &uri, Some(register.clone())).await;
    assert_eq!(status, StatusCode::OK, "{account}");
    assert_eq!(account["external_id"], external_id(A));
    let (status, taken) = call_json(&app, admin(B), "PUT", &uri, Some(register)).await;
    assert_eq!(
        (status, taken["message"].as_str().unwrap()),
        (StatusCode::CONFLICT, format!("account {A_ACCOUNT} is registered by another organisation").as_str())
    );
    assert!(app.deps.accounts.get_account(B, A_ACCOUNT).await.unwrap().is_none(), "nothing stored for B");
    let (status, listed) = call_json(&app, admin(B), "GET", "/dbroles/accounts", None).await;
    assert_eq!(
        (status, listed["items"].clone(), listed["external_id"].clone()),
        (StatusCode::OK, json!([]), json!(external_id(B)))
    );
    let (status, _) = call_json(&app, admin(B), "GET", &uri, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A provisions its instance.
    let (status, created) = call_json(&app, admin(A), "POST", "/dbroles/jobs", Some(request(&arn, json!({})))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let a_job = created["job_id"].as_str().unwrap().to_string();
    let job = wait_finished(&app, A, &a_job).await;
    assert_eq!(job["status"]["phase"], "completed", "{job}");
    let passwords = verifiers(&prefix).await;
    assert_eq!(passwords.len(), 3);
    let (_, resource) = call_json(&app, admin(A), "GET", "/resources/a-orders", None).await;

    // B cannot start a job there, however it asks.
    let hostile = [
        json!({}),
        json!({"aws": {"instance_arn": arn, "allow_master_password_reset": true, "default_security_group": {"ingress_cidr": "0.0.0.0/0"}}}),
    ];
    for extra in hostile {
        let (status, answer) = call_json(&app, admin(B), "POST", "/dbroles/jobs", Some(request(&arn, extra))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
        assert_eq!(
            answer["message"],
            format!("organisation {B} may not act on AWS account {A_ACCOUNT}: an admin registers it with PUT /dbroles/accounts/{A_ACCOUNT}")
        );
    }
    // Nor see, cancel or delete A's job, or reach A's resource.
    for (method, uri) in [
        ("GET", format!("/dbroles/jobs/{a_job}")),
        ("POST", format!("/dbroles/jobs/{a_job}/cancel")),
        ("DELETE", format!("/dbroles/jobs/{a_job}")),
        ("GET", "/resources/a-orders".into()),
    ] {
        let (status, answer) = call_json(&app, admin(B), method, &uri, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}: {answer}");
    }
    let (_, stats) = call_json(&app, admin(B), "GET", "/dbroles/jobs/stats", None).await;
    assert_eq!(stats["total_count"], 0);
    // A resource of B's with the same name is B's own; A's is untouched.
    let mine = json!({"name": "a-orders", "type": "database", "env_vars": {}, "roles": [{"name": "mine-ro", "type": "database", "secret": {"envvar:PASSWORD": "b"}}]});
    let (status, answer) = call_json(&app, admin(B), "PUT", "/resources/a-orders", Some(mine.clone())).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "B has no such resource: {answer}");
    let (status, answer) = call_json(&app, admin(B), "POST", "/resources", Some(mine)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(call_json(&app, admin(A), "GET", "/resources/a-orders", None).await.1, resource);

    // The tag naming B starts nothing: B has not registered the account.
    let outcome = triggers::handle(&app, &TriggerSettings::default(), &instance_created(&arn)).await.unwrap();
    assert!(outcome.started.is_empty(), "{outcome:?}");
    assert_eq!(outcome.skipped, [format!("{arn}: organisation {B} may not act on account {A_ACCOUNT}")]);

    // What the store and the database hold is what A left.
    assert!(jobs_of(&app, B).await.is_empty());
    assert_eq!(jobs_of(&app, A).await, [a_job.clone()]);
    assert_eq!(verifiers(&prefix).await, passwords, "no password changed");
    let (_, job) = call_json(&app, admin(A), "GET", &format!("/dbroles/jobs/{a_job}"), None).await;
    assert_eq!(job["status"]["phase"], "completed");

    // A resource of the same name that dbroles did not make is never replaced by create-connections.
    let hand_made = json!({"name": "a-orders", "type": "database", "env_vars": {}, "roles": [{"name": "ops", "type": "database", "secret": {"envvar:PASSWORD": "kept"}}]});
    let (status, _) = call_json(&app, admin(A), "DELETE", "/resources/a-orders", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call_json(&app, admin(A), "POST", "/resources", Some(hand_made)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, kept) = call_json(&app, admin(A), "GET", "/resources/a-orders", None).await;
    let (_, created) = call_json(&app, admin(A), "POST", "/dbroles/jobs", Some(request(&arn, json!({})))).await;
    let job = wait_finished(&app, A, created["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"]["phase"], "failed");
    let message = job["status"]["message"].as_str().unwrap();
    assert!(message.contains("the resource a-orders exists and dbroles did not create it"), "{message}");
    assert_eq!(call_json(&app, admin(A), "GET", "/resources/a-orders", None).await.1, kept);

    // Once A forgets the account, A too gets 403.
    let (status, _) = call_json(&app, admin(A), "DELETE", &uri, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call_json(&app, admin(A), "POST", "/dbroles/jobs", Some(request(&arn, json!({})))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    drop_machine_roles(&prefix).await;
}

#[tokio::test]
async fn one_server_one_owner_and_one_job_until_its_execution_has_ended() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap());
    let arn = "arn:aws:rds:us-east-1:000000000000:db:shared";
    let instance = LocalInstance::on_loopback(arn, "postgres", 5432, "postgres").tagged_for(A);
    let inventory = Arc::new(LocalInventory::new(vec![instance]).unwrap());
    let settings = Settings {
        accounts: AccountPolicy { home_orgs: vec![A.into(), B.into()], role_name: None, ..Default::default() },
        ..settings("hoop")
    };
    let deps = dbroles_core::wiring::local(store, inventory, settings);
    let workflow = Arc::new(Held::default());
    let app = App::new(&deps, workflow.clone());
    let post = |org: &'static str| {
        let app = app.clone();
        async move { call_json(&app, admin(org), "POST", "/dbroles/jobs", Some(request(arn, json!({})))).await }
    };
    let refused_b = || async {
        let (status, answer) = post(B).await;
        assert_eq!(
            (status, answer["message"].as_str().unwrap()),
            (StatusCode::FORBIDDEN, format!("the database server {arn} belongs to another organisation").as_str())
        );
    };

    // The server is A's from A's first job: B, which may use the same account, is refused whatever runs.
    let (status, created) = post(A).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let first = created["job_id"].as_str().unwrap().to_string();
    refused_b().await;

    // Cancelled, the job is failed at once, but its execution is still running: the server stays held.
    let (status, job) = call_json(&app, admin(A), "POST", &format!("/dbroles/jobs/{first}/cancel"), None).await;
    assert_eq!((status, job["status"]["phase"].as_str()), (StatusCode::OK, Some("failed")));
    assert_eq!(*workflow.stopped.lock().unwrap(), [format!("held:{first}")]);
    let (status, answer) = post(A).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(answer["message"].as_str().unwrap().contains(&first), "{answer}");
    refused_b().await;

    // The execution's end (the status-change rule) releases the server; the cancelled job keeps its message.
    let outcome = triggers::handle(&app, &TriggerSettings::default(), &execution_ended(A, &first, "ABORTED")).await.unwrap();
    assert!(outcome.repaired.is_empty(), "the job had finished: {outcome:?}");
    let (_, job) = call_json(&app, admin(A), "GET", &format!("/dbroles/jobs/{first}"), None).await;
    assert_eq!(job["status"]["message"], format!("cancelled by {A}-admin"));
    refused_b().await;
    let (status, created) = post(A).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let second = created["job_id"].as_str().unwrap().to_string();

    // An execution that vanished with its event lost: the lease runs out and the next job takes the server.
    let mut short = app.clone();
    short.deps.settings.lock_lease = chrono::Duration::seconds(1);
    let (status, created) = call_json(&short, admin(A), "POST", "/dbroles/jobs", Some(request(arn, json!({})))).await;
    assert_eq!(status, StatusCode::CONFLICT, "the second job holds the server: {created}");
    triggers::handle(&app, &TriggerSettings::default(), &execution_ended(A, &second, "FAILED")).await.unwrap();
    let (status, created) = call_json(&short, admin(A), "POST", "/dbroles/jobs", Some(request(arn, json!({})))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let vanished = created["job_id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, answer) = post(A).await;
    assert_eq!(status, StatusCode::ACCEPTED, "the vanished execution's lease ran out: {answer}");
    // The vanished job's late end releases nothing of the new holder's.
    triggers::handle(&app, &TriggerSettings::default(), &execution_ended(A, &vanished, "FAILED")).await.unwrap();
    assert_eq!(post(A).await.0, StatusCode::CONFLICT);
    refused_b().await;
}

/// An instance created in account 111111111111, as its own administrator would.
async fn instance_in_another_account(aws: &aws_config::SdkConfig, tags: &[(&str, &str)]) -> String {
    let other = other_account(aws, A_ACCOUNT).await;
    let mut create = create_instance(&other, &unique("a-remote-"), "postgres", "postgres").manage_master_user_password(true);
    for (key, value) in tags {
        create = create.tags(aws_sdk_rds::types::Tag::builder().key(*key).value(*value).build());
    }
    create.send().await.unwrap().db_instance.unwrap().db_instance_arn.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn on_moto_registration_is_proven_and_accounts_and_servers_are_kept_apart() {
    let aws = aws_config(&moto_endpoint()).await;
    let config = Config {
        settings: Settings {
            accounts: AccountPolicy {
                home_orgs: vec![A.into(), B.into()],
                role_name: Some("dbroles*".into()),
                ..Default::default()
            },
            tls: TlsConfig::disabled(),
            ..Settings::default()
        },
        ..Config::new(unique("jobs-"))
    };
    create_table(&aws, &config.table).await;
    let recorder = ActionRecorder::start(&moto_endpoint()).await;
    let deps = dbroles_core::wiring::aws(&config, &aws_config(&recorder.endpoint).await).await.unwrap();
    let app = App::new(&deps, Arc::new(Held::default()));
    let remote = instance_in_another_account(&aws, &[("dbroles:provision", "true"), ("dbroles:org", B)]).await;
    let uri = format!("/dbroles/accounts/{A_ACCOUNT}");
    // A's administrator makes two roles: one whose trust requires A's ExternalId, and one that requires none.
    let a_role = trusting_role(&aws, A_ACCOUNT, &unique("dbroles-"), Some(&external_id(A))).await;
    let open_role = trusting_role(&aws, A_ACCOUNT, &unique("dbroles-open-"), None).await;

    // B names A's role: its trust refuses B's ExternalId, and nothing is stored.
    let (status, refused) = call_json(&app, admin(B), "PUT", &uri, Some(json!({"role_arn": a_role}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    let message = refused["message"].as_str().unwrap();
    assert!(message.contains(&format!("could not assume {a_role} with ExternalId {}", external_id(B))), "{message}");
    assert!(message.contains("AccessDenied"), "{message}");
    assert!(app.deps.accounts.list_accounts(B).await.unwrap().is_empty());
    // A role that lets anyone in who knows its ARN is refused, naming the condition to add.
    let (status, refused) = call_json(&app, admin(A), "PUT", &uri, Some(json!({"role_arn": open_role}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    let condition = format!("{{\"StringEquals\": {{\"sts:ExternalId\": \"{}\"}}}}", external_id(A));
    assert!(refused["message"].as_str().unwrap().contains(&condition), "{refused}");
    assert!(app.deps.accounts.list_accounts(A).await.unwrap().is_empty());
    // A role the deployment may not assume is refused before any call.
    let (status, answer) =
        call_json(&app, admin(A), "PUT", &uri, Some(json!({"role_arn": format!("arn:aws:iam::{A_ACCOUNT}:role/admin")}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(answer["message"], "role_arn: this deployment may assume only roles named dbroles*, not admin");
    // A proves its registration: STS gave dbroles the role, with A's ExternalId.
    recorder.take();
    let (status, account) = call_json(&app, admin(A), "PUT", &uri, Some(json!({"role_arn": a_role}))).await;
    assert_eq!(status, StatusCode::OK, "{account}");
    assert!(recorder.take().contains("sts:AssumeRole"));
    let role_name = a_role.rsplit('/').next().unwrap();
    assert_eq!(account["assumed_arn"], format!("arn:aws:sts::{A_ACCOUNT}:assumed-role/{role_name}/dbroles"));
    // Now the account is A's: B's registration is a 409 that names nobody.
    let (status, taken) = call_json(&app, admin(B), "PUT", &uri, Some(json!({"role_arn": a_role}))).await;
    assert_eq!(
        (status, taken["message"].clone()),
        (StatusCode::CONFLICT, json!(format!("account {A_ACCOUNT} is registered by another organisation")))
    );
    assert_eq!(app.deps.accounts.get_account(A, A_ACCOUNT).await.unwrap().unwrap().external_id, external_id(A));
    // The deployment's own account is not registered: the deployment names who uses it.
    let (status, _) =
        call_json(&app, admin(A), "PUT", "/dbroles/accounts/123456789012", Some(json!({"role_arn": role_arn("123456789012")})))
            .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // B cannot act on A's instance; the tag naming B starts nothing.
    let (status, answer) = call_json(&app, admin(B), "POST", "/dbroles/jobs", Some(request(&remote, json!({})))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    let outcome = triggers::handle(&app, &TriggerSettings::default(), &instance_created(&remote)).await.unwrap();
    assert_eq!(outcome.skipped, [format!("{remote}: organisation {B} may not act on account {A_ACCOUNT}")]);
    assert!(jobs_of(&app, B).await.is_empty(), "nothing stored for B");
    // A can: the instance was not locked by B's attempts.
    let (status, answer) = call_json(&app, admin(A), "POST", "/dbroles/jobs", Some(request(&remote, json!({})))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let job = app.deps.jobs.get_job(A, answer["job_id"].as_str().unwrap()).await.unwrap().unwrap();
    assert_eq!(job.access.unwrap().role_arn.as_deref(), Some(a_role.as_str()), "the steps assume A's role");

    // In the deployment's own account, which both may use, B cannot take A's tagged
    // instance: its first job there is refused, so nothing is attached or reset.
    let rds = aws_sdk_rds::Client::new(&aws);
    let home_id = unique("a-home-");
    let tag = aws_sdk_rds::types::Tag::builder().key("dbroles:org").value(A).build();
    let home =
        create_instance(&aws, &home_id, "postgres", "postgres").master_user_password("unknown-1").tags(tag).send().await.unwrap();
    let home_arn = home.db_instance.unwrap().db_instance_arn.unwrap();
    let groups = |described: aws_sdk_rds::operation::describe_db_instances::DescribeDbInstancesOutput| -> Vec<String> {
        described.db_instances()[0]
            .vpc_security_groups()
            .iter()
            .filter_map(|g| g.vpc_security_group_id())
            .map(String::from)
            .collect()
    };
    let before = groups(rds.describe_db_instances().db_instance_identifier(&home_id).send().await.unwrap());
    let hostile = json!({"aws": {"instance_arn": home_arn, "allow_master_password_reset": true, "default_security_group": {"ingress_cidr": "0.0.0.0/0"}}});
    let (status, answer) = call_json(&app, admin(B), "POST", "/dbroles/jobs", Some(request(&home_arn, hostile))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(
        answer["message"],
        format!("{home_arn} is in this deployment's own account and belongs to no organisation yet: it becomes organisation {B}'s only if it is tagged dbroles:org={B}")
    );
    assert!(jobs_of(&app, B).await.is_empty(), "nothing stored for B");
    let after = groups(rds.describe_db_instances().db_instance_identifier(&home_id).send().await.unwrap());
    assert_eq!(after, before, "no group attached");
    let secrets = aws_sdk_secretsmanager::Client::new(&aws);
    let master = format!("dbroles/123456789012/us-east-1/{home_id}/master");
    assert!(secrets.describe_secret().secret_id(&master).send().await.is_err(), "no master password was reset");
    // A's first job makes it A's; retagged for B, it stays A's.
    let (status, answer) = call_json(&app, admin(A), "POST", "/dbroles/jobs", Some(request(&home_arn, json!({})))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let retag = aws_sdk_rds::types::Tag::builder().key("dbroles:org").value(B).build();
    rds.add_tags_to_resource().resource_name(&home_arn).tags(retag).send().await.unwrap();
    let (status, answer) = call_json(&app, admin(B), "POST", "/dbroles/jobs", Some(request(&home_arn, json!({})))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(answer["message"], format!("the database server {home_arn} belongs to another organisation"));

    // An Aurora cluster and its instance are one server, whichever organisation asks.
    let cluster_id = unique("aurora-");
    let cluster = create_cluster(&aws, &cluster_id, "aurora-postgresql", "postgres").await;
    let writer = create_writer(&aws, &cluster_id, "aurora-postgresql").await;
    let (cluster_arn, writer_arn) = (cluster.db_cluster_arn.unwrap(), writer.db_instance_arn.unwrap());
    let for_a = aws_sdk_rds::types::Tag::builder().key("dbroles:org").value(A).build();
    rds.add_tags_to_resource().resource_name(&cluster_arn).tags(for_a).send().await.unwrap();
    let (status, answer) = call_json(&app, admin(A), "POST", "/dbroles/jobs", Some(request(&cluster_arn, json!({})))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    // Its writer is the same server: held by A's job, and A's (the cluster's resource id), whatever the writer's tags.
    let (status, answer) = call_json(&app, admin(A), "POST", "/dbroles/jobs", Some(request(&writer_arn, json!({})))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    let (status, answer) = call_json(&app, admin(B), "POST", "/dbroles/jobs", Some(request(&writer_arn, json!({})))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
}

/// A deployment on the embedded store over `instances` (in the local account,
/// which A and B may use), whose executions are held.
fn held_deployment(instances: Vec<LocalInstance>, org_concurrency: usize) -> (tempfile::TempDir, App, Arc<Held>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap());
    let settings = Settings {
        accounts: AccountPolicy { home_orgs: vec![A.into(), B.into()], role_name: None, ..Default::default() },
        org_concurrency,
        ..settings("hoop")
    };
    let deps = dbroles_core::wiring::local(store, Arc::new(LocalInventory::new(instances).unwrap()), settings);
    let workflow = Arc::new(Held::default());
    (dir, App::new(&deps, workflow.clone()), workflow)
}

fn local_arn(name: &str) -> String {
    format!("arn:aws:rds:us-east-1:000000000000:db:{name}")
}

/// Stores a job as `POST /dbroles/jobs` does, naming its execution, without starting it:
/// what is left when the API dies between the two.
async fn stored_not_started(app: &App, org: &str, arn: &str) -> String {
    let request: dbroles_core::model::request::CreateJobRequest = serde_json::from_value(request(arn, json!({}))).unwrap();
    let job_id = dbroles_core::model::new_id();
    let naming = Naming { execution: Some(app.workflow.execution_id(&job_id)), job_id, fleet_job_id: None, resource_id: None };
    match jobs::create(&app.deps, org, "alice", request, None, Some(naming)).await.unwrap() {
        jobs::Stored::New(record) => record.job.id,
        jobs::Stored::Replayed(id) => panic!("replayed {id}"),
    }
}

/// The sweeper, on either store: a job whose execution never started is failed
/// and its server released; a running one is left alone; a lock whose job is gone is released.
async fn the_sweeper_fails_what_never_started(app: &App, org: &str, arns: [&str; 3]) {
    let [never, running, gone] = arns;
    let orphan = stored_not_started(app, org, never).await;
    let (status, created) = call_json(app, admin(org), "POST", "/dbroles/jobs", Some(request(running, json!({})))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let started = created["job_id"].as_str().unwrap().to_string();
    // A finished job whose record is gone (expired, say) while its lock stayed.
    let lost = stored_not_started(app, org, gone).await;
    let mut record = app.deps.jobs.get_job(org, &lost).await.unwrap().unwrap();
    record.finish(Phase::Failed, "finished elsewhere");
    assert!(app.deps.jobs.finish_job(&record, app.deps.settings.expiry()).await.unwrap());
    app.deps.jobs.delete_job(org, &lost).await.unwrap();

    // Young jobs are left alone, their execution may be starting; a lock without a job is released at once.
    let young = jobs::sweep(app, "swept", jobs::start_grace()).await.unwrap();
    assert_eq!((young.failed, young.released), (Vec::new(), vec![gone.to_string()]));
    let swept = jobs::sweep(app, "swept", chrono::Duration::zero()).await.unwrap();
    assert_eq!((swept.failed, swept.released), (vec![orphan.clone()], Vec::new()));
    let (_, job) = call_json(app, admin(org), "GET", &format!("/dbroles/jobs/{orphan}"), None).await;
    assert_eq!(job["status"]["phase"], "failed");
    assert_eq!(job["status"]["message"], "the job's execution never started or was lost: swept");
    let (_, job) = call_json(app, admin(org), "GET", &format!("/dbroles/jobs/{started}"), None).await;
    assert_eq!(job["status"]["phase"], "running", "a running execution's job is left alone");
    let held: Vec<String> = app.deps.jobs.locks().await.unwrap().into_iter().map(|lock| lock.server).collect();
    assert_eq!(held, [running.to_string()], "only the running job's server is held");
    // The released servers take new jobs.
    for arn in [never, gone] {
        let (status, answer) = call_json(app, admin(org), "POST", "/dbroles/jobs", Some(request(arn, json!({})))).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{arn}: {answer}");
    }
}

/// A deployment on moto's AWS with a table of its own, whose executions [`Held`] only records.
async fn held_on_moto() -> (aws_config::SdkConfig, App) {
    let aws = aws_config(&moto_endpoint()).await;
    let config = Config { settings: settings("hoop"), ..Config::new(unique("jobs-")) };
    create_table(&aws, &config.table).await;
    let deps = dbroles_core::wiring::aws(&config, &aws).await.unwrap();
    (aws, App::new(&deps, Arc::new(Held::default())))
}

#[tokio::test]
async fn on_the_embedded_store_the_sweeper_fails_what_never_started() {
    let arns = [local_arn("never"), local_arn("running"), local_arn("gone")];
    let instances = arns.iter().map(|arn| LocalInstance::on_loopback(arn, "postgres", 5432, "postgres").tagged_for(A)).collect();
    let (_dir, app, _) = held_deployment(instances, 50);
    the_sweeper_fails_what_never_started(&app, A, [&arns[0], &arns[1], &arns[2]]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn on_moto_the_sweeper_fails_what_never_started() {
    let (aws, app) = held_on_moto().await;
    let mut arns = Vec::new();
    for name in ["never-", "running-", "gone-"] {
        arns.push(moto_instance(&aws, &unique(name), "postgres", ("postgres", "x"), &[]).await.arn);
    }
    the_sweeper_fails_what_never_started(&app, ORG, [&arns[0], &arns[1], &arns[2]]).await;
}

/// The sweeper, on either store, for fleet jobs: one stored but never started
/// (the API died before starting it) is failed; one whose execution ended without
/// finishing it is failed too; one whose execution runs is left alone, as are
/// young ones; a fleet job is failed once.
async fn the_sweeper_fails_fleet_jobs_that_never_started(app: &App, org: &str) {
    let fleet = json!({"selector": {}, "agent_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890", "max_concurrency": 1});
    let mut started = Vec::new();
    for _ in 0..2 {
        let (status, created) = call_json(app, admin(org), "POST", "/dbroles/fleet-jobs", Some(fleet.clone())).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{created}");
        started.push(created["fleet_job_id"].as_str().unwrap().to_string());
    }
    let [running, ended] = &started[..] else { unreachable!("two fleet jobs") };
    let mut orphan = app.deps.fleets.get_fleet(org, running).await.unwrap().unwrap();
    orphan.fleet.id = dbroles_core::model::new_id();
    orphan.execution = app.workflow.fleet_execution_id(&orphan.fleet.id);
    app.deps.fleets.create_fleet(&orphan).await.unwrap();
    let execution = app.workflow.fleet_execution_id(ended).unwrap();
    app.workflow.stop(&execution, "gone").await.unwrap();

    let young = fleet::sweep(app, "swept", jobs::start_grace()).await.unwrap();
    assert_eq!(young, [] as [String; 0], "young fleet jobs are left alone");
    let mut swept = fleet::sweep(app, "swept", chrono::Duration::zero()).await.unwrap();
    swept.sort();
    let mut expected = vec![orphan.fleet.id.clone(), ended.clone()];
    expected.sort();
    assert_eq!(swept, expected);
    let phase = |fleet: &Value| (fleet["status"]["phase"].as_str().unwrap().to_string(), fleet["status"]["message"].clone());
    let (_, fleet) = call_json(app, admin(org), "GET", &format!("/dbroles/fleet-jobs/{}", orphan.fleet.id), None).await;
    assert_eq!(phase(&fleet), ("failed".into(), json!("the fleet job's execution never started or was lost: swept")));
    let (_, fleet) = call_json(app, admin(org), "GET", &format!("/dbroles/fleet-jobs/{ended}"), None).await;
    assert_eq!(phase(&fleet), ("failed".into(), json!("the fleet job's execution ended without finishing it: swept")));
    let (_, fleet) = call_json(app, admin(org), "GET", &format!("/dbroles/fleet-jobs/{running}"), None).await;
    assert_eq!(fleet["status"]["phase"], "running", "a running execution's fleet job is left alone: {fleet}");
    let again = fleet::sweep(app, "swept", chrono::Duration::zero()).await.unwrap();
    assert_eq!(again, [] as [String; 0], "a fleet job is failed once");
}

#[tokio::test]
async fn on_the_embedded_store_the_sweeper_fails_fleet_jobs_that_never_started() {
    let (_dir, app, _) = held_deployment(Vec::new(), 50);
    the_sweeper_fails_fleet_jobs_that_never_started(&app, A).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn on_moto_the_sweeper_fails_fleet_jobs_that_never_started() {
    let (_, app) = held_on_moto().await;
    the_sweeper_fails_fleet_jobs_that_never_started(&app, ORG).await;
}

/// Locally an execution names the process running it: after a restart, those of
/// a process that has ended are missing; those of a live one run.
#[tokio::test]
async fn a_local_execution_lives_as_long_as_its_process() {
    let arns = [local_arn("dead"), local_arn("alive")];
    let instances = arns.iter().map(|arn| LocalInstance::on_loopback(arn, "postgres", 5432, "postgres").tagged_for(A)).collect();
    let (_dir, held, _) = held_deployment(instances, 50);
    let app = App::new(&held.deps, Arc::new(Local::new(Executor::provision(0.01), held.deps.clone())));
    let mut ids = Vec::new();
    // Process 1 lives as long as the machine; no process has the largest pid Linux can give.
    for (arn, pid) in arns.iter().zip([4_194_304u32, 1]) {
        let request: dbroles_core::model::request::CreateJobRequest = serde_json::from_value(request(arn, json!({}))).unwrap();
        let job_id = dbroles_core::model::new_id();
        let naming = Naming { execution: Some(format!("local:{pid}:{job_id}")), job_id, fleet_job_id: None, resource_id: None };
        jobs::create(&app.deps, A, "alice", request, None, Some(naming)).await.unwrap();
        ids.push(app.deps.jobs.list_jobs(A, &JobQuery { limit: 1, ..Default::default() }).await.unwrap().items[0].id.clone());
    }
    let swept = jobs::sweep(&app, "the dbroles process running it ended", chrono::Duration::zero()).await.unwrap();
    assert_eq!(swept.failed, [ids[0].clone()]);
    let alive = app.deps.jobs.get_job(A, &ids[1]).await.unwrap().unwrap();
    assert!(alive.is_running());
}

/// Fair share: an organisation with as many jobs running as the deployment allows
/// gets 429 with Retry-After, and nothing is stored; another organisation is not held up.
#[tokio::test]
async fn one_organisation_cannot_take_more_than_its_share() {
    let names = ["a1", "a2", "a3", "b1"];
    let instances = names
        .iter()
        .map(|name| {
            let org = if name.starts_with('a') { A } else { B };
            LocalInstance::on_loopback(&local_arn(name), "postgres", 5432, "postgres").tagged_for(org)
        })
        .collect();
    let (_dir, app, _) = held_deployment(instances, 2);
    for name in ["a1", "a2"] {
        let (status, _) = call_json(&app, admin(A), "POST", "/dbroles/jobs", Some(request(&local_arn(name), json!({})))).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let body = bytes::Bytes::from(request(&local_arn("a3"), json!({})).to_string());
    let post = http::Request::builder().method("POST").uri("/dbroles/jobs").body(body).unwrap();
    let answer = call_api(&app, admin(A), post).await;
    assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS, "{}", answer.body());
    assert_eq!(answer.headers()[http::header::RETRY_AFTER], "30");
    let message: Value = serde_json::from_str(answer.body()).unwrap();
    assert_eq!(
        message["message"],
        format!("organisation {A} has 2 jobs running, as many as this deployment lets one organisation run at once (2): try again when some have finished")
    );
    assert_eq!(jobs_of(&app, A).await.len(), 2, "nothing stored");
    let (status, _) = call_json(&app, admin(B), "POST", "/dbroles/jobs", Some(request(&local_arn("b1"), json!({})))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "B has its own share");
    // A fleet job's concurrency counts too.
    let fleet = json!({"selector": {}, "agent_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890", "max_concurrency": 1});
    let (status, answer) = call_json(&app, admin(A), "POST", "/dbroles/fleet-jobs", Some(fleet)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
}

/// Resources are read by readers only, as jobs are.
#[tokio::test]
async fn resources_need_a_reader() {
    let (_dir, app, _) = held_deployment(Vec::new(), 50);
    let nobody = || Ok(Caller { sub: "eve".into(), org: A.into(), groups: vec!["guests".into()] });
    for uri in ["/resources", "/resources/a-orders", "/api/resources"] {
        let (status, answer) = call_json(&app, nobody(), "GET", uri, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri}: {answer}");
    }
}

/// An instance deleted and created again under the same ARN is another server:
/// a rotation does not carry the old one's records over to it.
#[tokio::test]
async fn a_recreated_instance_is_not_rotated_with_the_old_ones_records() {
    let arn = local_arn("recreated");
    let instance = LocalInstance {
        resource_id: Some("db-NEWONE".into()),
        ..LocalInstance::on_loopback(&arn, "postgres", 5432, "postgres").tagged_for(A)
    };
    let (_dir, app, _) = held_deployment(vec![instance], 50);
    let request: dbroles_core::model::request::CreateJobRequest = serde_json::from_value(request(&arn, json!({}))).unwrap();
    let provisioned = Provisioned {
        org: A.into(),
        db_arn: arn.clone(),
        request,
        resource_id: Some("db-OLDONE".into()),
        server_arn: None,
        endpoint_host: None,
    };
    app.deps.jobs.mark_provisioned(&provisioned).await.unwrap();
    let fleet =
        json!({"selector": {"provisioned": true}, "agent_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890", "max_concurrency": 1});
    let (status, created) = call_json(&app, admin(A), "POST", "/dbroles/fleet-jobs", Some(fleet)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let fleet_job_id = created["fleet_job_id"].as_str().unwrap().to_string();
    let child = ChildInput { org_id: A.into(), fleet_job_id: fleet_job_id.clone(), instance_arn: arn.clone() };
    let outcome = fleet::start_child(&app.deps, &child).await.unwrap();
    assert_eq!(outcome.outcome, "failed");
    assert_eq!(
        outcome.message.as_deref(),
        Some(format!("{arn} was deleted and created again since dbroles provisioned it: the new server is not rotated with the old one's records").as_str())
    );
    assert!(jobs_of(&app, A).await.is_empty(), "no job for the new server");
}

/// A deployment that shares accounts (`SharedAccounts=true`): two organisations
/// register one account, each through a role trusting its own ExternalId, and
/// each server there belongs to the first that acts on it.
#[tokio::test]
async fn shared_accounts_leave_each_server_to_its_first_organisation() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap());
    let (first, second) =
        (format!("arn:aws:rds:us-east-1:{A_ACCOUNT}:db:first"), format!("arn:aws:rds:us-east-1:{A_ACCOUNT}:db:second"));
    let instances = [&first, &second].map(|arn| LocalInstance::on_loopback(arn, "postgres", 5432, "postgres")).to_vec();
    let roles = vec![
        LocalRole { arn: format!("arn:aws:iam::{A_ACCOUNT}:role/dbroles-a"), external_id: external_id(A) },
        LocalRole { arn: format!("arn:aws:iam::{A_ACCOUNT}:role/dbroles-b"), external_id: external_id(B) },
    ];
    let inventory = Arc::new(LocalInventory::new(instances).unwrap().with_roles(roles));
    let accounts = AccountPolicy { shared_accounts: true, ..Default::default() };
    let deps = dbroles_core::wiring::local(store, inventory, Settings { accounts, ..settings("hoop") });
    let app = App::new(&deps, Arc::new(Held::default()));
    let uri = format!("/dbroles/accounts/{A_ACCOUNT}");
    for (org, role) in [(A, "dbroles-a"), (B, "dbroles-b")] {
        let body = json!({"role_arn": format!("arn:aws:iam::{A_ACCOUNT}:role/{role}")});
        let (status, answer) = call_json(&app, admin(org), "PUT", &uri, Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{org}: {answer}");
    }
    let post = |org: &'static str, arn: String| {
        let app = app.clone();
        async move { call_json(&app, admin(org), "POST", "/dbroles/jobs", Some(request(&arn, json!({})))).await }
    };
    assert_eq!(post(A, first.clone()).await.0, StatusCode::ACCEPTED);
    assert_eq!(post(B, second.clone()).await.0, StatusCode::ACCEPTED);
    let (status, answer) = post(B, first.clone()).await;
    assert_eq!(
        (status, answer["message"].clone()),
        (StatusCode::FORBIDDEN, json!(format!("the database server {first} belongs to another organisation")))
    );
    let (status, _) = post(A, second).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
