//! Servers that are gone, on moto: an RDS deletion event, or the daily sweep,
//! finds the server really gone before it removes anything, then deletes its
//! roles' stored credentials (Secrets Manager) and the connections dbroles
//! made, forgets it for the rotation schedule, and records a finished job. The
//! events function's AWS calls are ones `template.yaml` grants it.

use dbroles_core::config::{Config, CredentialsStore, Settings, TriggerSettings};
use dbroles_core::deps::App;
use dbroles_core::engine::Level;
use dbroles_core::model::job::Phase;
use dbroles_core::model::request::CreateJobRequest;
use dbroles_core::model::resource::{ResourceInput, DB_ARN_TAG};
use dbroles_core::secrets::{RoleCredentials, SecretRef};
use dbroles_core::store::Provisioned;
use dbroles_core::triggers;
use dbroles_tests::*;
use serde_json::{json, Value};

struct Gone {
    app: App,
    recorder: ActionRecorder,
    prefix: String,
}

impl Gone {
    async fn deploy() -> Self {
        let aws = aws_config(&moto_endpoint()).await;
        let table = unique("jobs-");
        create_table(&aws, &table).await;
        let recorder = ActionRecorder::start(&moto_endpoint()).await;
        let observed = aws_config(&recorder.endpoint).await;
        let prefix = unique("g");
        let config = Config {
            credentials: CredentialsStore::SecretsManager,
            state_machine_arn: Some("arn:aws:states:us-east-1:123456789012:stateMachine:unused".into()),
            settings: Settings { role_prefix: prefix.clone(), accounts: acme_at_home(), ..Settings::default() },
            ..Config::new(table)
        };
        let deps = dbroles_core::wiring::aws(&config, &observed).await.unwrap();
        let app = dbroles_core::wiring::aws_app(&config, &deps, &observed).unwrap();
        Self { app, recorder, prefix }
    }

    /// The server as a finished run leaves it: each role's secret, the connections, the provisioned record.
    async fn provisioned(&self, identifier: &str, arn: &str, resource_id: &str) -> Vec<String> {
        let deps = &self.app.deps;
        let host = format!("{identifier}.aaaaaaaaaa.us-east-1.rds.amazonaws.com");
        let mut secret_ids = Vec::new();
        for level in Level::ALL {
            let user = level.user(&self.prefix);
            let secret = SecretRef {
                org: ORG.into(),
                instance_id: identifier.into(),
                instance_arn: arn.into(),
                job_id: "j".into(),
                user: user.clone(),
                host: host.clone(),
            };
            let credentials = RoleCredentials {
                host: host.clone(),
                port: 5432,
                user,
                password: "Pa55word-of-the-role".to_string().into(),
                db: "postgres".into(),
                engine: "postgres".into(),
                logins: Vec::new(),
            };
            let staged = deps.secrets.stage(&secret, &credentials).await.unwrap();
            deps.secrets.confirm(&staged).await.unwrap();
            secret_ids.push(deps.secrets.secret_id(&secret));
        }
        let input: ResourceInput = serde_json::from_value(json!({
            "name": identifier, "type": "database", "env_vars": {"HOST": host},
            "roles": [{"name": format!("{identifier}-ro"), "type": "database", "managed_by": "dbroles",
                       "connection_tags": {DB_ARN_TAG: arn}, "secret": {"envvar:PASS": "_aws:x:PASSWORD"}}]
        }))
        .unwrap();
        deps.resources.create_resource(&input.into_resource(ORG, None)).await.unwrap();
        let request: CreateJobRequest = serde_json::from_value(json!({
            "agent_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890", "aws": {"instance_arn": arn}, "connection_prefix_name": "x-"
        }))
        .unwrap();
        let provisioned = Provisioned {
            org: ORG.into(),
            db_arn: arn.into(),
            request,
            resource_id: Some(resource_id.into()),
            server_arn: Some(arn.into()),
            endpoint_host: Some(host),
        };
        deps.jobs.mark_provisioned(&provisioned).await.unwrap();
        secret_ids
    }

    async fn trigger(&self, event: Value) -> Value {
        self.recorder.take();
        let outcome = triggers::handle(&self.app, &TriggerSettings::default(), &event).await.unwrap();
        let taken = self.recorder.take();
        let granted = template_actions("EventsFunction");
        let missing: Vec<&String> = taken.iter().filter(|a| *a != "sts:GetCallerIdentity" && !granted.contains(*a)).collect();
        assert!(missing.is_empty(), "template.yaml does not grant EventsFunction {missing:?}");
        serde_json::to_value(outcome).unwrap()
    }

    /// Everything dbroles kept for the server is gone, and a completed job says so.
    async fn retired(&self, outcome: &Value, arn: &str, secret_ids: &[String]) {
        let deps = &self.app.deps;
        let job_id = outcome["repaired"][0].as_str().unwrap_or_else(|| panic!("a job records it: {outcome}"));
        let job = deps.jobs.get_job(ORG, job_id).await.unwrap().unwrap().job;
        let status = job.status.unwrap();
        assert_eq!(status.phase, Phase::Completed, "{}", status.message);
        assert_eq!(status.message, "the server is gone: its roles' stored credentials and connections are removed");
        assert_eq!(status.result.len(), 3);
        for id in secret_ids {
            assert!(deps.secrets.read(id).await.unwrap().is_none(), "{id} is deleted");
        }
        let identifier = arn.rsplit(':').next().unwrap();
        assert!(deps.resources.get_resource(ORG, identifier).await.unwrap().is_none(), "the connections are removed");
        assert!(deps.jobs.get_provisioned(ORG, arn).await.unwrap().is_none(), "no longer rotated");
        assert!(deps.jobs.locks().await.unwrap().iter().all(|lock| lock.job_id != job_id), "its lock is released");
    }
}

fn deletion(arn: &str) -> Value {
    let mut event: Value =
        serde_json::from_str(&std::fs::read_to_string(path_of("events/events/rds-instance-deleted.json")).unwrap()).unwrap();
    event["detail"]["SourceArn"] = json!(arn);
    event
}

#[tokio::test]
async fn a_deleted_instance_loses_its_credentials_and_connections_once_it_is_really_gone() {
    let gone = Gone::deploy().await;
    let identifier = unique("gone-");
    let aws = aws_config(&moto_endpoint()).await;
    let instance = moto_instance(&aws, &identifier, "postgres", ("postgres", "x"), &[]).await;
    let rds = aws_sdk_rds::Client::new(&aws);
    let described = rds.describe_db_instances().db_instance_identifier(&identifier).send().await.unwrap();
    let resource_id = described.db_instances()[0].dbi_resource_id().unwrap().to_string();
    let secret_ids = gone.provisioned(&identifier, &instance.arn, &resource_id).await;

    // An event while the server still exists removes nothing.
    let outcome = gone.trigger(deletion(&instance.arn)).await;
    assert_eq!(outcome["skipped"], json!([format!("{} still exists", instance.arn)]), "{outcome}");
    assert!(gone.app.deps.secrets.read(&secret_ids[0]).await.unwrap().is_some(), "nothing was removed");

    rds.delete_db_instance().db_instance_identifier(&identifier).skip_final_snapshot(true).send().await.unwrap();
    let outcome = gone.trigger(deletion(&instance.arn)).await;
    gone.retired(&outcome, &instance.arn, &secret_ids).await;
}

#[tokio::test]
async fn the_sweep_retires_a_server_whose_deletion_event_never_came() {
    let gone = Gone::deploy().await;
    let identifier = unique("vanished-");
    let arn = format!("arn:aws:rds:us-east-1:123456789012:db:{identifier}");
    let secret_ids = gone.provisioned(&identifier, &arn, "db-VANISHED").await;
    let outcome = gone.trigger(json!({"source": "dbroles", "detail-type": "Gone Sweep"})).await;
    gone.retired(&outcome, &arn, &secret_ids).await;
}
