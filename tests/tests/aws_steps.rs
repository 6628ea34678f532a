//! The steps that change AWS, against moto: the security group of
//! `default_security_group` (EC2 and `ModifyDBInstance`), the master password
//! reset with the state machine's Wait loop, and instances in other accounts
//! through `AssumeRole`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use dbroles_core::config::Config;
use dbroles_core::config::Settings;
use dbroles_core::engine::TlsConfig;
use dbroles_core::executor::Local;
use dbroles_core::executor::{Executor, Progress};
use dbroles_core::inventory::rds::RdsInventory;
use dbroles_core::inventory::{Instance, Inventory, InventoryError, Listed, MasterCredentials};
use dbroles_core::lifecycle::jobs;
use dbroles_core::model::account::{external_id, Access};
use dbroles_core::model::job::{Job, JobSpec, Phase};
use dbroles_core::model::request::InstanceArn;
use dbroles_core::network::ec2::Ec2Network;
use dbroles_core::network::Network;
use dbroles_core::secrets::aws::AwsSecrets;
use dbroles_core::secrets::SecretStore;
use dbroles_core::steps::{ErrorType, StepError};
use dbroles_tests::*;
use secrecy::ExposeSecret;
use serde_json::json;

fn arn(text: &str) -> InstanceArn {
    text.parse().unwrap()
}

/// moto's own account, as an organisation allowed there reaches it.
fn home() -> Access {
    Access::home("123456789012", "acme")
}

#[tokio::test]
async fn opening_the_network_keeps_one_group_per_instance_beside_the_instances_own() {
    let aws = aws_config(&moto_endpoint()).await;
    let instance = moto_instance(&aws, &unique("net-"), "postgres", ("postgres", "x"), &[]).await;
    let inventory = RdsInventory::new(&aws, HashMap::new());
    // The provision function's own group, in the same VPC.
    let provision = aws_sdk_ec2::Client::new(&aws)
        .create_security_group()
        .group_name(unique("provision-"))
        .description("the provision function")
        .vpc_id(&instance.vpc_id)
        .send()
        .await
        .unwrap()
        .group_id
        .unwrap();
    let network = Ec2Network { home: aws.clone(), admit: vec![provision.clone()] };
    let described = inventory.describe(&arn(&instance.arn), &home()).await.unwrap().unwrap();
    assert_eq!(described.vpc_id.as_deref(), Some(instance.vpc_id.as_str()));

    let group = network.open(&described, "10.40.0.0/16").await.unwrap();
    // Again, as a retried step or a second job would: the same group, and the existing rule is success.
    let described = inventory.describe(&arn(&instance.arn), &home()).await.unwrap().unwrap();
    assert_eq!(network.open(&described, "10.40.0.0/16").await.unwrap(), group);
    assert_eq!(network.open(&described, "2001:db8::/56").await.unwrap(), group);

    let ec2 = aws_sdk_ec2::Client::new(&aws);
    let found = ec2.describe_security_groups().group_ids(&group).send().await.unwrap();
    let found = &found.security_groups()[0];
    assert_eq!(found.group_name(), Some(format!("dbroles-{}", instance.identifier).as_str()));
    assert_eq!(found.vpc_id(), Some(instance.vpc_id.as_str()));
    let managed = found.tags().iter().find(|t| t.key() == Some("dbroles:managed")).and_then(|t| t.value());
    assert_eq!(managed, Some("true"), "the tag the deployment's IAM policy allows changes on");
    let rules = found.ip_permissions();
    assert!(
        rules.iter().all(|r| (r.ip_protocol(), r.from_port(), r.to_port()) == (Some("tcp"), Some(5432), Some(5432))),
        "{rules:?}"
    );
    let admitted: Vec<&str> = rules.iter().flat_map(|r| r.user_id_group_pairs()).filter_map(|p| p.group_id()).collect();
    assert_eq!(admitted, [provision.as_str()], "the provision function is let in, once");
    let v4: Vec<&str> = rules.iter().flat_map(|r| r.ip_ranges()).filter_map(|r| r.cidr_ip()).collect();
    let v6: Vec<&str> = rules.iter().flat_map(|r| r.ipv6_ranges()).filter_map(|r| r.cidr_ipv6()).collect();
    assert_eq!((v4, v6), (vec!["10.40.0.0/16"], vec!["2001:db8::/56"]));

    // Attached beside the group the instance had, once.
    let attached = inventory.describe(&arn(&instance.arn), &home()).await.unwrap().unwrap().security_groups;
    assert_eq!(attached, [instance.app_group.clone(), group]);

    let error = StepError::from(network.open(&described, "10.40.0.0/33").await.unwrap_err());
    assert_eq!(error.error_type, ErrorType::InvalidInput);
    assert_eq!(error.message, "aws.default_security_group.ingress_cidr: '10.40.0.0/33' is not a CIDR");
}

/// An instance in an account an organisation registered: its security group is
/// made and attached there, through the registered role, never in the deployment's own account.
#[tokio::test]
async fn opening_the_network_of_another_accounts_instance_acts_in_that_account() {
    let aws = aws_config(&moto_endpoint()).await;
    let account = "222222222222";
    let theirs = other_account(&aws, account).await;
    let instance = moto_instance(&theirs, &unique("net-remote-"), "postgres", ("postgres", "x"), &[]).await;
    let access = Access {
        account: account.into(),
        role_arn: Some(format!("arn:aws:iam::{account}:role/dbroles")),
        external_id: external_id("acme"),
    };
    let described = RdsInventory::new(&aws, HashMap::new()).describe(&arn(&instance.arn), &access).await.unwrap().unwrap();
    let network = Ec2Network { home: aws.clone(), admit: Vec::new() };
    let group = network.open(&described, "10.40.0.0/16").await.unwrap();

    let there = aws_sdk_ec2::Client::new(&theirs).describe_security_groups().group_ids(&group).send().await.unwrap();
    assert_eq!(there.security_groups()[0].vpc_id(), Some(instance.vpc_id.as_str()), "made in the instance's account");
    let here = aws_sdk_ec2::Client::new(&aws).describe_security_groups().group_ids(&group).send().await;
    assert!(here.is_err(), "nothing was made in the deployment's own account");
    let attached = aws_sdk_rds::Client::new(&theirs).describe_db_instances().db_instance_identifier(&instance.identifier);
    let attached = attached.send().await.unwrap();
    let groups: Vec<&str> =
        attached.db_instances()[0].vpc_security_groups().iter().filter_map(|g| g.vpc_security_group_id()).collect();
    assert_eq!(groups, [instance.app_group.as_str(), group.as_str()]);
}

/// RDS applying a new master password: the instance is `modifying` for a number of
/// status checks, and the new password then works on the database.
struct ApplyingRds {
    rds: RdsInventory,
    secrets: aws_sdk_secretsmanager::Client,
    cluster_port: u16,
    modifying_for: u32,
    modifying: AtomicU32,
}

#[async_trait]
impl Inventory for ApplyingRds {
    async fn home_account(&self) -> Result<String, InventoryError> {
        self.rds.home_account().await
    }

    fn home_region(&self) -> String {
        self.rds.home_region()
    }

    async fn verify(&self, access: &Access) -> Result<String, InventoryError> {
        self.rds.verify(access).await
    }

    async fn list(&self, access: &Access, region: &str) -> Result<Vec<Listed>, InventoryError> {
        self.rds.list(access, region).await
    }

    async fn describe(&self, arn: &InstanceArn, access: &Access) -> Result<Option<Instance>, InventoryError> {
        let mut found = self.rds.describe(arn, access).await?;
        if let Some(instance) = &mut found {
            if self.modifying.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                instance.status = "modifying".into();
            }
        }
        Ok(found)
    }

    async fn master_credentials(&self, instance: &Instance) -> Result<MasterCredentials, InventoryError> {
        self.rds.master_credentials(instance).await
    }

    async fn caller_arn(&self, access: &Access) -> Result<String, InventoryError> {
        self.rds.caller_arn(access).await
    }

    async fn reset_master_password(&self, instance: &Instance) -> Result<(), InventoryError> {
        self.rds.reset_master_password(instance).await?;
        // What RDS does with ModifyDBInstance: the staged password becomes the server's.
        let staged = self
            .secrets
            .get_secret_value()
            .secret_id(format!("dbroles/123456789012/us-east-1/{}/master", instance.identifier))
            .version_stage("AWSPENDING")
            .send()
            .await
            .unwrap();
        let new: serde_json::Value = serde_json::from_str(staged.secret_string().unwrap()).unwrap();
        let superuser = pg_connect(self.cluster_port, "postgres", SUPERUSER_PASSWORD, "postgres").await.unwrap();
        let statement = format!("ALTER ROLE master PASSWORD '{}'", new["password"].as_str().unwrap().replace('\'', "''"));
        superuser.batch_execute(&statement).await.unwrap();
        self.modifying.store(self.modifying_for, Ordering::SeqCst);
        Ok(())
    }

    async fn promote_master_password(&self, instance: &Instance) -> Result<bool, InventoryError> {
        self.rds.promote_master_password(instance).await
    }
}

/// An instance in moto without a managed master secret, served by `cluster`, and
/// the deployment around it; `modifying_for` status checks follow a reset.
async fn unmanaged_instance(cluster: &PgCluster, modifying_for: u32) -> (String, ActionRecorder, dbroles_core::deps::Deps) {
    let aws = aws_config(&moto_endpoint()).await;
    let identifier = unique("legacy-");
    let created = create_instance(&aws, &identifier, "postgres", "master")
        .master_user_password("the-one-nobody-wrote-down")
        .tags(aws_sdk_rds::types::Tag::builder().key("dbroles:org").value("acme").build())
        .send()
        .await
        .unwrap()
        .db_instance
        .unwrap();
    let host = created.endpoint.unwrap().address.unwrap();
    let config = Config {
        credentials: dbroles_core::config::CredentialsStore::SecretsManager,
        endpoint_overrides: HashMap::from([(host, format!("127.0.0.1:{}", cluster.port))]),
        settings: Settings {
            role_prefix: unique("r"),
            tls: TlsConfig::disabled(),
            connect_timeout: Duration::from_secs(5),
            ..Settings::default()
        },
        ..Config::new(unique("jobs-"))
    };
    create_table(&aws, &config.table).await;
    // The steps' AWS calls pass through a recorder.
    let recorder = ActionRecorder::start(&moto_endpoint()).await;
    let observed = aws_config(&recorder.endpoint).await;
    let mut deps = dbroles_core::wiring::aws(&config, &observed).await.unwrap();
    deps.inventory = Arc::new(ApplyingRds {
        rds: RdsInventory::new(&observed, config.endpoint_overrides.clone()),
        secrets: aws_sdk_secretsmanager::Client::new(&aws),
        cluster_port: cluster.port,
        modifying_for,
        modifying: AtomicU32::new(0),
    });
    (created.db_instance_arn.unwrap(), recorder, deps)
}

/// Runs one job on the local executor (waits shortened); the job and the states it entered.
async fn run_job(deps: &dbroles_core::deps::Deps, instance_arn: &str, allow_reset: bool) -> (Job, Vec<String>) {
    let request = serde_json::from_value(json!({
        "agent_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
        "aws": {"instance_arn": instance_arn, "allow_master_password_reset": allow_reset},
        "connection_prefix_name": "legacy-",
        "job_steps": []
    }))
    .unwrap();
    // As `POST /dbroles/jobs` stores it: the lock is on the instance's ARN.
    let spec = JobSpec { db_arn: instance_arn.into(), db_engine: "postgres".into(), ..Default::default() };
    let new = dbroles_tests::stored_job(jobs::new_record("acme", "alice", request, spec));
    let record = new.record.clone();
    deps.jobs.create_job(new).await.unwrap();
    let entered = Mutex::new(Vec::new());
    let progress = |event: Progress<'_>| {
        if let Progress::Entered(state) = event {
            entered.lock().unwrap().push(state.to_string());
        }
    };
    Local::new(Executor::provision(0.0001), deps.clone()).execute(&record, &progress).await.unwrap();
    let job = deps.jobs.get_job("acme", record.id()).await.unwrap().unwrap().job;
    (job, entered.into_inner().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_master_password_reset_waits_for_the_instance_and_then_provisions() {
    let cluster = PgCluster::start();
    cluster.rds_like().await;
    let (instance_arn, recorder, deps) = unmanaged_instance(&cluster, 2).await;

    // Without the opt-in: failed, saying how to enable the managed secret.
    let (job, _) = run_job(&deps, &instance_arn, false).await;
    assert_eq!(job.phase(), Phase::Failed);
    let message = job.status.unwrap().message;
    assert!(message.contains("--manage-master-user-password"), "{message}");
    assert!(message.contains("aws.allow_master_password_reset"), "{message}");

    // With it: a new password is stored, set, waited for, and used.
    recorder.take();
    let (job, entered) = run_job(&deps, &instance_arn, true).await;
    let taken = recorder.take();
    let granted = template_actions("MasterCredentialsFunction");
    for action in
        ["secretsmanager:DescribeSecret", "secretsmanager:PutSecretValue", "secretsmanager:CreateSecret", "rds:ModifyDBInstance"]
    {
        assert!(taken.contains(action), "the reset did {action}: {taken:?}");
        assert!(granted.contains(action), "template.yaml grants MasterCredentialsFunction {action}");
    }
    assert_eq!(job.phase(), Phase::Completed, "{:?}", job.status);
    let waits = entered.iter().filter(|s| *s == "WaitForInstance").count();
    let checks = entered.iter().filter(|s| *s == "InstanceStatus").count();
    assert_eq!((waits, checks), (3, 3), "two checks saw 'modifying', the third 'available': {entered:?}");

    let aws = aws_config(&moto_endpoint()).await;
    let master = master_secret(&instance_arn).await.expect("the new master password is in Secrets Manager");
    assert_eq!(master["username"], "master");
    let new_password = master["password"].as_str().unwrap();
    cluster.client("master", new_password, "postgres").await.expect("the stored master password logs in");
    assert!(cluster.client("master", RDS_MASTER_PASSWORD, "postgres").await.is_err(), "the old one no longer does");

    // The roles log in with what the job stored.
    let store = AwsSecrets::new(aws_sdk_secretsmanager::Client::new(&aws), "dbroles");
    for result in &job.status.unwrap().result {
        let secret_id = result.credentials_info.as_ref().unwrap().secret_id.clone();
        let credentials = store.read(&secret_id).await.unwrap().unwrap();
        cluster.client(&result.user_role, credentials.password.expose_secret(), "postgres").await.expect("the role logs in");
    }

    // A second job reads the password dbroles set, with no reset and no wait.
    let (job, entered) = run_job(&deps, &instance_arn, true).await;
    assert_eq!(job.phase(), Phase::Completed, "{:?}", job.status);
    assert!(!entered.iter().any(|s| s == "WaitForInstance"), "{entered:?}");
}

/// The master credentials in force in the secret dbroles keeps (`AWSCURRENT`), if any.
async fn master_secret(instance_arn: &str) -> Option<serde_json::Value> {
    let aws = aws_config(&moto_endpoint()).await;
    let identifier = instance_arn.rsplit(':').next().unwrap();
    let secrets = aws_sdk_secretsmanager::Client::new(&aws);
    let stored = secrets
        .get_secret_value()
        .secret_id(format!("dbroles/123456789012/us-east-1/{identifier}/master"))
        .version_stage("AWSCURRENT")
        .send();
    serde_json::from_str(stored.await.ok()?.secret_string()?).ok()
}

/// The master password in force, if any.
async fn master_in_force(instance_arn: &str) -> Option<String> {
    master_secret(instance_arn).await?["password"].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_modify_leaves_the_password_in_force_and_the_next_job_recovers() {
    let cluster = PgCluster::start();
    cluster.rds_like().await;
    let (instance_arn, recorder, deps) = unmanaged_instance(&cluster, 0).await;
    recorder.faults.fail("ModifyDBInstance", "InvalidDBInstanceState", 1);
    let (job, _) = run_job(&deps, &instance_arn, true).await;
    assert_eq!(job.phase(), Phase::Failed);
    assert!(job.status.unwrap().message.contains("InvalidDBInstanceState"));
    assert_eq!(master_in_force(&instance_arn).await.as_deref(), Some(""), "the staged password was not put in force");
    cluster.client("master", RDS_MASTER_PASSWORD, "postgres").await.expect("the instance keeps its password");

    let (job, _) = run_job(&deps, &instance_arn, true).await;
    assert_eq!(job.phase(), Phase::Completed, "{:?}", job.status);
    let in_force = master_in_force(&instance_arn).await.expect("the new password is in force");
    cluster.client("master", &in_force, "postgres").await.expect("the password in force logs in");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_throttled_describe_secret_is_retried_not_taken_for_a_missing_secret() {
    let cluster = PgCluster::start();
    cluster.rds_like().await;
    let (instance_arn, recorder, deps) = unmanaged_instance(&cluster, 0).await;
    let (job, _) = run_job(&deps, &instance_arn, true).await;
    assert_eq!(job.phase(), Phase::Completed, "{:?}", job.status);
    let in_force = master_in_force(&instance_arn).await;

    // Throttling beyond the SDK's own three attempts: the step fails Retryable, and no reset follows.
    recorder.faults.throttle("DescribeSecret", 3);
    let (job, entered) = run_job(&deps, &instance_arn, true).await;
    assert_eq!(job.phase(), Phase::Completed, "{:?}", job.status);
    assert_eq!(recorder.faults.pending(), 0, "the throttles were met");
    assert!(!entered.iter().any(|s| s == "WaitForInstance"), "a throttled read reset the password: {entered:?}");
    assert_eq!(master_in_force(&instance_arn).await, in_force, "the master password did not change");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_that_never_becomes_available_fails_the_job_after_the_bounded_checks() {
    let cluster = PgCluster::start();
    cluster.rds_like().await;
    let (instance_arn, _recorder, deps) = unmanaged_instance(&cluster, u32::MAX).await;
    let (job, entered) = run_job(&deps, &instance_arn, true).await;
    assert_eq!(job.phase(), Phase::Failed);
    let identifier = instance_arn.rsplit(':').next().unwrap();
    assert_eq!(job.status.unwrap().message, format!("{identifier} is still 'modifying' after 40 status checks"));
    assert_eq!(entered.iter().filter(|s| *s == "InstanceStatus").count(), 40);
    assert!(!entered.iter().any(|s| s == "Provision"), "{entered:?}");
}

#[tokio::test]
async fn an_instance_in_another_account_is_reached_through_the_cross_account_role() {
    let aws = aws_config(&moto_endpoint()).await;
    let other = other_account(&aws, "111111111111").await;
    let identifier = unique("remote-");
    let created = create_instance(&other, &identifier, "mysql", "admin")
        .manage_master_user_password(true)
        .send()
        .await
        .unwrap()
        .db_instance
        .unwrap();
    let instance_arn = created.db_instance_arn.unwrap();
    assert!(instance_arn.contains(":111111111111:db:"), "{instance_arn}");
    aws_sdk_secretsmanager::Client::new(&other)
        .put_secret_value()
        .secret_id(created.master_user_secret.unwrap().secret_arn.unwrap())
        .secret_string(json!({"username": "admin", "password": "remote-Pa55"}).to_string())
        .send()
        .await
        .unwrap();

    // Without a registered role, the other account is out of reach, and the message says why.
    let inventory = RdsInventory::new(&aws, HashMap::new());
    let error = inventory.describe(&arn(&instance_arn), &Access::home("111111111111", "acme")).await.unwrap_err();
    assert!(matches!(&error, InventoryError::AccessDenied(m) if m.contains("account 111111111111")), "{error}");

    let registered = Access {
        account: "111111111111".into(),
        role_arn: Some("arn:aws:iam::111111111111:role/dbroles-provisioner".into()),
        external_id: external_id("acme"),
    };
    let found = inventory.describe(&arn(&instance_arn), &registered).await.unwrap().expect("found through the role");
    assert_eq!((found.identifier.as_str(), found.engine.as_str()), (identifier.as_str(), "mysql"));
    let master = inventory.master_credentials(&found).await.unwrap();
    assert_eq!((master.user.as_str(), master.password.expose_secret()), ("admin", "remote-Pa55"));
    assert_eq!(
        inventory.caller_arn(&registered).await.unwrap(),
        "arn:aws:sts::111111111111:assumed-role/dbroles-provisioner/dbroles",
        "the job's account_arn names the role dbroles assumed"
    );
}

#[tokio::test]
async fn a_new_aurora_cluster_is_waited_for_until_its_writer_is_available() {
    use dbroles_core::steps::{self, Step};
    let aws = aws_config(&moto_endpoint()).await;
    let config = Config { settings: settings(&unique("r")), ..Config::new(unique("jobs-")) };
    create_table(&aws, &config.table).await;
    let deps = dbroles_core::wiring::aws(&config, &aws).await.unwrap();
    // A cluster as the tag trigger sees it: created, no instance yet.
    let cluster_id = unique("aurora-");
    let cluster = create_cluster(&aws, &cluster_id, "aurora-postgresql", "postgres").await;
    let request = serde_json::from_value(json!({
        "agent_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
        "aws": {"instance_arn": cluster.db_cluster_arn.unwrap()},
        "connection_prefix_name": "aurora-",
        "job_steps": []
    }))
    .unwrap();
    let new = stored_job(jobs::new_record("acme", "eventbridge:rds-created", request, JobSpec::default()));
    let state = json!({"org_id": "acme", "job_id": new.record.id()});
    deps.jobs.create_job(new).await.unwrap();

    let state = steps::run(Step::MasterCredentials, &deps, state).await.unwrap();
    assert_eq!(state["master_ready"], false, "no writer yet: the state machine waits");
    let state = steps::run(Step::InstanceStatus, &deps, state).await.unwrap();
    assert_eq!((state["master_ready"].clone(), state["status_checks"].clone()), (json!(false), json!(1)));
    create_writer(&aws, &cluster_id, "aurora-postgresql").await;
    let state = steps::run(Step::InstanceStatus, &deps, state).await.unwrap();
    assert_eq!(state["master_ready"], true, "the writer is available: Provision may run");
}
