//! The state machine as `sam deploy` leaves it. The deploy rehearsal
//! (`scripts/rehearse_deploy.py`, run by `scripts/test`) deployed template.yaml
//! to moto's CloudFormation and wrote down what it deployed: the state machine's
//! definition, substituted with the deployed functions' ARNs, the table, and each
//! function's environment. Here that definition runs on moto's Step Functions:
//! every Task invokes a deployed function by its CloudFormation name, and the
//! proxy answers with the step that function's `DBROLES_STEP` chooses, as the
//! step binary does on Lambda. The deployed fleet definition runs there too,
//! its Distributed Map starting the deployed provisioning definition per instance.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dbroles_core::config::Config;
use dbroles_core::deps::Deps;
use dbroles_core::lifecycle::jobs;
use dbroles_core::model::job::SecretsProvider;
use dbroles_core::model::job::{Job, Phase};
use dbroles_core::secrets::SecretRef;
use dbroles_core::steps::Step;
use dbroles_tests::*;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;

/// What the rehearsal wrote (`DBROLES_TEST_DEPLOYED`).
#[derive(Deserialize)]
struct Rehearsal {
    definition: String,
    fleet_definition: String,
    table: String,
    /// Each function of the state machine by its deployed name: its environment.
    functions: HashMap<String, HashMap<String, serde_json::Value>>,
}

impl Rehearsal {
    /// The provisioning state machine's name, as the deployed fleet definition's Map names it.
    fn provision_machine_name(&self) -> String {
        let definition: serde_json::Value = serde_json::from_str(&self.fleet_definition).unwrap();
        let processor = &definition["States"]["Instances"]["ItemProcessor"]["States"]["Provision"];
        let arn = processor["Parameters"]["StateMachineArn"].as_str().expect("the Map names the provisioning machine");
        arn.rsplit(':').next().unwrap().to_string()
    }

    /// A variable of the deployed environment of the function that runs `step`.
    fn environment_of(&self, step: Step, variable: &str) -> String {
        let (_, environment) = self
            .functions
            .iter()
            .find(|(_, environment)| environment.get("DBROLES_STEP").and_then(|s| s.as_str()) == Some(step.name()))
            .unwrap_or_else(|| panic!("no deployed function runs {}", step.name()));
        let value = environment.get(variable).and_then(|value| value.as_str());
        value.unwrap_or_else(|| panic!("the {} function has no {variable}", step.name())).to_string()
    }

    fn read() -> Self {
        let path = std::env::var("DBROLES_TEST_DEPLOYED").expect("DBROLES_TEST_DEPLOYED is not set: run scripts/test");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The deployed functions and the step each runs, as its environment chooses.
    fn steps(&self) -> DeployedFunctions {
        let steps: DeployedFunctions = self
            .functions
            .iter()
            .map(|(name, environment)| {
                let step = environment.get("DBROLES_STEP").and_then(|s| s.as_str()).and_then(Step::named);
                (name.clone(), step.unwrap_or_else(|| panic!("{name} names no step: {environment:?}")))
            })
            .collect();
        let distinct: BTreeSet<&str> = steps.values().map(|step| step.name()).collect();
        assert_eq!(distinct.len(), Step::ALL.len(), "one deployed function per step: {steps:?}");
        steps
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_deployed_state_machine_runs_a_job_through_the_deployed_functions() {
    let rehearsal = Rehearsal::read();
    let functions = rehearsal.steps();
    for (name, environment) in &rehearsal.functions {
        let table = environment.get("DBROLES_TABLE").and_then(|t| t.as_str());
        assert_eq!(table, Some(rehearsal.table.as_str()), "{name} works on the deployed table");
        assert_eq!(Step::from_resource(name), None, "{name} is CloudFormation's name: only its environment names the step");
    }

    let cluster = PgCluster::start();
    cluster.rds_like().await;
    let instance_id = unique("orders-");
    let host = format!("{instance_id}.aaaaaaaaaa.us-east-1.rds.amazonaws.com");
    let prefix = unique("r");
    let config = Config {
        endpoint_overrides: HashMap::from([(host, format!("127.0.0.1:{}", cluster.port))]),
        settings: settings(&prefix),
        ..Config::new(rehearsal.table.clone())
    };
    // The own store, the deployment's default, under a KMS key made in this moto;
    // the API's side below reads the credentials with the same key.
    let store = Arc::new(OnceLock::new());
    let (steps_config, steps_store) = (config.clone(), store.clone());
    let moto = MotoExecutor::deployed(
        |endpoint, _| async move {
            let aws = aws_config(&endpoint).await;
            let credentials = own_store_on_kms(&aws).await;
            steps_store.set(credentials.clone()).expect("one store");
            dbroles_core::wiring::aws(&Config { credentials, ..steps_config }, &aws).await.unwrap()
        },
        functions.clone(),
    )
    .await;
    let aws = aws_config(&moto.endpoint).await;
    create_table(&aws, &config.table).await;
    let instance = moto_instance(&aws, &instance_id, "postgres", ("master", RDS_MASTER_PASSWORD), &[]).await;
    let machine = aws_sdk_sfn::Client::new(&aws)
        .create_state_machine()
        .name(unique("deployed-"))
        .definition(&rehearsal.definition)
        .role_arn("arn:aws:iam::123456789012:role/dbroles-states")
        .send()
        .await
        .expect("moto takes the deployed definition")
        .state_machine_arn;

    // The API function's side, as in the deployment: the job stored, the execution started.
    let config =
        Config { state_machine_arn: Some(machine), credentials: store.get().expect("the steps' store").clone(), ..config };
    let deps = dbroles_core::wiring::aws(&config, &aws).await.unwrap();
    let app = dbroles_core::wiring::aws_app(&config, &deps, &aws).unwrap();
    let request = serde_json::from_value(json!({
        "agent_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
        "aws": {"instance_arn": instance.arn},
        "connection_prefix_name": "orders-",
        "job_steps": ["create-connections"]
    }))
    .unwrap();
    let id = jobs::start(&app, ORG, "alice", request, None).await.unwrap();
    let job = finished(&app, &id).await;
    assert_eq!(job.phase(), Phase::Completed, "{:?}", job.status);

    // Step Functions invoked the deployed functions, by their deployed names.
    let invoked: BTreeSet<String> = moto.invocations.lock().unwrap().iter().map(|(function, _)| function.clone()).collect();
    let ran: BTreeSet<&str> =
        invoked.iter().map(|name| functions.get(name).unwrap_or_else(|| panic!("{name} was not deployed")).name()).collect();
    for step in ["resolve", "master-credentials", "provision", "create-connections", "hook", "finalize"] {
        assert!(ran.contains(step), "the deployed {step} function ran: {invoked:?}");
    }

    // The roles log in with what the deployment stored.
    for result in &job.status.as_ref().unwrap().result {
        assert_eq!(result.credentials_info.as_ref().unwrap().secrets_manager_provider, SecretsProvider::Database);
        let secret = SecretRef {
            org: ORG.into(),
            instance_id: instance_id.clone(),
            instance_arn: instance.arn.clone(),
            job_id: id.clone(),
            user: result.user_role.clone(),
            host: String::new(),
        };
        let stored =
            deps.secrets.read(&deps.secrets.secret_id(&secret)).await.unwrap().expect("the role's credentials are stored");
        cluster.client(&result.user_role, stored.password.expose_secret(), "app").await.expect("the role logs in");
    }
    let resource = deps.resources.get_resource(ORG, &instance_id).await.unwrap().expect("the resource was registered");
    assert_eq!(resource.roles.len(), 3);
}

async fn finished(app: &dbroles_core::deps::App, id: &str) -> Job {
    for _ in 0..600 {
        let job = jobs::find(app.deps.jobs.as_ref(), ORG, id).await.unwrap().job;
        if job.phase() != Phase::Running {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {id} is still running");
}

/// The instances of the moto fleet: `RUN` of them reach PostgreSQL clusters of the
/// test's own through the endpoint override, one more reaches a closed port; the
/// rest only exist in moto's RDS.
const LISTED: usize = 200;
const RUN: usize = 4;

/// The deployed fleet definition on moto's Step Functions: the selector lists 200
/// RDS instances (two pages of `DescribeDBInstances`), and a fleet job over the
/// five tagged `fleet=run` runs each one's job as a child execution of the
/// deployed provisioning definition (`startExecution.sync:2`), whose steps reach
/// the clusters: four complete, and the dead one fails its item and the fleet job.
#[tokio::test(flavor = "multi_thread")]
async fn the_deployed_fleet_state_machine_lists_200_instances_and_provisions_its_selection() {
    let rehearsal = Rehearsal::read();
    let clusters: Vec<_> = (0..RUN).map(|_| tokio::task::spawn_blocking(PgCluster::start)).collect();
    let mut running = Vec::new();
    for cluster in clusters {
        let cluster = cluster.await.unwrap();
        cluster.rds_like().await;
        running.push((unique("fleet-"), cluster));
    }
    let dead = unique("dead-");
    let endpoint = |id: &str| format!("{id}.aaaaaaaaaa.us-east-1.rds.amazonaws.com");
    let mut overrides: HashMap<String, String> =
        running.iter().map(|(id, cluster)| (endpoint(id), format!("127.0.0.1:{}", cluster.port))).collect();
    overrides.insert(endpoint(&dead), format!("127.0.0.1:{}", free_port()));
    let prefix = unique("r");
    // The provisioning machine under the name the deployed fleet definition gives it.
    let provision_name = rehearsal.provision_machine_name();
    let provision_arn = rehearsal.environment_of(Step::FleetStartJob, "DBROLES_STATE_MACHINE_ARN");
    let config = Config {
        endpoint_overrides: overrides,
        settings: settings(&prefix),
        credentials: dbroles_core::config::CredentialsStore::SecretsManager,
        state_machine_arn: Some(provision_arn.clone()),
        ..Config::new(rehearsal.table.clone())
    };
    let steps_config = config.clone();
    let functions = rehearsal.steps();
    let moto = MotoExecutor::deployed(
        |endpoint, _| async move { dbroles_core::wiring::aws(&steps_config, &aws_config(&endpoint).await).await.unwrap() },
        functions.clone(),
    )
    .await;
    let aws = aws_config(&moto.endpoint).await;
    create_table(&aws, &config.table).await;
    let mut arns = HashMap::new();
    for id in running.iter().map(|(id, _)| id).chain([&dead]) {
        let instance = moto_instance(&aws, id, "postgres", ("master", RDS_MASTER_PASSWORD), &[("fleet", "run")]).await;
        arns.insert(instance.arn, id.clone());
    }
    for i in 0..LISTED - RUN - 1 {
        let engine = ["postgres", "mysql"][i % 2];
        let tag = aws_sdk_rds::types::Tag::builder().key("fleet").value("listed").build();
        create_instance(&aws, &format!("listed-{i:03}"), engine, "master").tags(tag).send().await.unwrap();
    }
    let sfn = aws_sdk_sfn::Client::new(&aws);
    let create = |name: &str, definition: &str| {
        sfn.create_state_machine()
            .name(name)
            .definition(definition)
            .role_arn("arn:aws:iam::123456789012:role/dbroles-states")
            .send()
    };
    let provision =
        create(&provision_name, &rehearsal.definition).await.expect("moto takes the deployed provisioning definition");
    assert_eq!(provision.state_machine_arn, provision_arn, "fleet-start-job names the machine the Map starts");
    let fleet_machine =
        create(&unique("fleet-"), &rehearsal.fleet_definition).await.expect("moto takes the deployed fleet definition");
    let config = Config { fleet_state_machine_arn: Some(fleet_machine.state_machine_arn), ..config };
    let deps = dbroles_core::wiring::aws(&config, &aws).await.unwrap();
    let app = dbroles_core::wiring::aws_app(&config, &deps, &aws).unwrap();

    // The selector lists every instance: 200, over two pages (its Map is not run: most endpoints are fake).
    let held = dbroles_core::deps::App::new(&deps, Arc::new(Held::default()));
    let listing =
        dbroles_core::lifecycle::fleet::start(&held, ORG, "alice", fleet_request(json!({"tags": ["fleet"]}))).await.unwrap();
    let input = dbroles_core::model::fleet::FleetInput { org_id: ORG.into(), fleet_job_id: listing.clone() };
    let selection = dbroles_core::lifecycle::fleet::select(&deps, &input).await.unwrap();
    assert_eq!(selection.instances.len(), LISTED);
    let postgres = fleet_request(json!({"tags": ["fleet"], "engines": ["postgres"]}));
    let listing = dbroles_core::lifecycle::fleet::start(&held, ORG, "alice", postgres).await.unwrap();
    let input = dbroles_core::model::fleet::FleetInput { org_id: ORG.into(), fleet_job_id: listing };
    assert_eq!(
        dbroles_core::lifecycle::fleet::select(&deps, &input).await.unwrap().instances.len(),
        RUN + 1 + (LISTED - RUN - 1).div_ceil(2)
    );

    // The tagged five, each a child execution of the provisioning machine.
    let selection = fleet_request(json!({"tags": ["fleet=run"], "engines": ["postgres"]}));
    let id = dbroles_core::lifecycle::fleet::start(&app, ORG, "alice", selection).await.unwrap();
    let fleet = wait_fleet(&deps, &id).await;
    assert_eq!(fleet.status.phase, Phase::Failed, "the dead instance fails the fleet job: {:?}", fleet.status);
    let counts = &fleet.status.counts;
    assert_eq!((counts.total, counts.completed, counts.failed, counts.running), (RUN as u64 + 1, RUN as u64, 1, 0));
    let children = dbroles_core::lifecycle::fleet::children(deps.jobs.as_ref(), ORG, &id, 100, None).await.unwrap().items;
    assert_eq!(children.len(), RUN + 1, "the Map's items each created their instance's job");
    for job in &children {
        let status = job.status.as_ref().unwrap();
        let instance_id = &arns[job.db_arn()];
        let Some((_, cluster)) = running.iter().find(|(id, _)| id == instance_id) else {
            assert_eq!(status.phase, Phase::Failed);
            assert!(status.message.contains("connect"), "the dead instance's job says why: {}", status.message);
            continue;
        };
        assert_eq!(status.phase, Phase::Completed, "{status:?}");
        // The roles log in with what the child execution stored in Secrets Manager.
        for result in &status.result {
            let secret = SecretRef {
                org: ORG.into(),
                instance_id: instance_id.clone(),
                instance_arn: job.db_arn().into(),
                job_id: job.id.clone(),
                user: result.user_role.clone(),
                host: String::new(),
            };
            let stored = deps.secrets.read(&deps.secrets.secret_id(&secret)).await.unwrap().expect("the role is stored");
            cluster.client(&result.user_role, stored.password.expose_secret(), "app").await.expect("the role logs in");
        }
        assert_eq!(status.result.len(), 3, "{status:?}");
    }
    // Each job names the child execution that carried it out (a cancel stops it).
    for job in &children {
        let record = deps.jobs.get_job(ORG, &job.id).await.unwrap().unwrap();
        let execution = record.execution.expect("the job names its execution");
        let described = sfn.describe_execution().execution_arn(&execution).send().await.expect("the execution exists");
        assert_eq!((described.name(), described.state_machine_arn()), (Some(job.id.as_str()), provision_arn.as_str()));
    }
    // Every job released its server.
    for arn in arns.keys() {
        let request = serde_json::from_value(json!({
            "agent_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
            "aws": {"instance_arn": arn},
            "connection_prefix_name": "after-",
        }))
        .unwrap();
        let created = dbroles_core::lifecycle::jobs::create(&deps, ORG, "alice", request, None, None).await;
        assert!(matches!(created, Ok(dbroles_core::lifecycle::jobs::Stored::New(_))), "{arn} is released: {created:?}");
    }
    let invoked: BTreeSet<String> = moto.invocations.lock().unwrap().iter().map(|(function, _)| function.clone()).collect();
    let ran: BTreeSet<&str> = invoked.iter().filter_map(|name| functions.get(name)).map(|step| step.name()).collect();
    for step in ["fleet-select", "fleet-start-job", "resolve", "master-credentials", "provision", "finalize", "fleet-finish"] {
        assert!(ran.contains(step), "the deployed {step} function ran: {ran:?}");
    }
    drop(running);
}

fn fleet_request(selector: serde_json::Value) -> dbroles_core::model::fleet::CreateFleetJobRequest {
    let request = json!({"selector": selector, "agent_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890", "max_concurrency": 4});
    serde_json::from_value(request).unwrap()
}

/// The fleet job once it has finished.
async fn wait_fleet(deps: &Deps, id: &str) -> dbroles_core::model::fleet::FleetJob {
    for _ in 0..1200 {
        let fleet = dbroles_core::lifecycle::fleet::find(deps.fleets.as_ref(), deps.jobs.as_ref(), ORG, id).await.unwrap();
        if fleet.status.phase != Phase::Running {
            return fleet;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("fleet job {id} is still running");
}
