//! What each step does. Every step reads the job through [`jobs::load_running`], which
//! refuses a job that is no longer running (cancelled), and saves what it learnt
//! through [`jobs::save_progress`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use super::{ErrorType, State, StepError};
use crate::deps::Deps;
use crate::engine::{self, Family, Level};
use crate::inventory::{Instance, InventoryError};
use crate::lifecycle::jobs;
use crate::model::account::Access;
use crate::model::job::{HookStatus, JobRecord, JobStatus, Phase, SecretsProvider};
use crate::model::request::JobStep;
use crate::model::resource::{ResourceInput, RoleInput};
use crate::provision;
use crate::secrets::vault::VaultSecrets;
use crate::secrets::{SecretRef, SecretStore};

/// Status checks after a master password reset before the job gives up (with the
/// state machine's 30 s wait: 20 minutes).
pub const MAX_STATUS_CHECKS: u32 = 40;

/// The most of a hook's output a job keeps.
pub const HOOK_OUTPUT_LIMIT: usize = 4096;

async fn load(deps: &Deps, state: &State) -> Result<JobRecord, StepError> {
    Ok(jobs::load_running(deps.jobs.as_ref(), &state.input()).await?)
}

async fn save(deps: &Deps, record: &JobRecord) -> Result<(), StepError> {
    Ok(jobs::save_progress(deps.jobs.as_ref(), record).await?)
}

/// How the job reaches its instance's account: what [`jobs::start`] checked and recorded.
fn access(record: &JobRecord) -> Result<&Access, StepError> {
    record.access.as_ref().ok_or_else(|| {
        StepError::new(ErrorType::AccessDenied, format!("job {} records no access to its instance's account", record.id()))
    })
}

/// The job's instance, as long as it is the server the job was created for: one
/// deleted and created again under the same ARN is another server, perhaps another's.
async fn instance(deps: &Deps, record: &JobRecord) -> Result<Instance, StepError> {
    let arn = record.request.instance_arn();
    let instance = deps
        .inventory
        .describe(&arn, access(record)?)
        .await?
        .ok_or_else(|| StepError::new(ErrorType::InstanceNotFound, format!("no instance or cluster {arn} was found")))?;
    match record.resource_id.as_deref() {
        Some(id) if id != instance.resource_id => Err(StepError::new(
            ErrorType::InstanceNotFound,
            format!("{arn} was deleted and created again since the job started (it is another server now)"),
        )),
        _ => Ok(instance),
    }
}

/// The store for this job's credentials: the Vault folder it names (in the
/// organisation's folder the deployment allows), or the deployment's default.
fn secret_store(deps: &Deps, record: &JobRecord) -> Result<Arc<dyn SecretStore>, StepError> {
    let Some(vault) = &record.request.vault_provider else { return Ok(deps.secrets.clone()) };
    let (Some(settings), Some(policy)) = (&deps.vault, &deps.settings.vault) else {
        return Err(StepError::new(
            ErrorType::NotSupported,
            "vault_provider: this deployment has no Vault configured (DBROLES_VAULT_ADDR)",
        ));
    };
    let path =
        policy.path_for(record.org(), &vault.secret_id).map_err(|invalid| StepError::new(ErrorType::InvalidInput, invalid.0))?;
    Ok(Arc::new(VaultSecrets::new(&settings.address, settings.token.clone(), settings.namespace.clone(), &path)))
}

/// Finds the instance, checks its engine, and fills the job's `spec`.
pub async fn resolve(deps: &Deps, mut state: State) -> Result<State, StepError> {
    let mut record = load(deps, &state).await?;
    let instance = instance(deps, &record).await?;
    if Family::of(&instance.engine).is_none() {
        return Err(StepError::new(ErrorType::UnsupportedEngine, engine::unsupported(&instance.engine)));
    }
    engine::validate_prefix(&deps.settings.role_prefix, &instance.engine)
        .map_err(|invalid| StepError::new(ErrorType::InvalidInput, invalid.0))?;
    let account = record.request.instance_arn().account;
    let mut spec = jobs::spec_of(&instance, &account);
    spec.account_arn = deps.inventory.caller_arn(access(&record)?).await?;
    record.job.spec = Some(spec);
    save(deps, &record).await?;
    state.open_network = record.request.aws.default_security_group.is_some();
    state.create_connections = record.request.has_step(JobStep::CreateConnections);
    state.send_webhook = record.request.has_step(JobStep::SendWebhook);
    state.master_ready = false;
    state.status_checks = 0;
    Ok(state)
}

use crate::model::account::ORG_TAG;

fn may_change(record: &JobRecord, instance: &Instance, what: &str) -> Result<(), StepError> {
    let home = access(record)?.role_arn.is_none();
    let tagged = instance.tags.iter().any(|tag| tag.key == ORG_TAG && tag.value == record.org());
    match !home || tagged {
        true => Ok(()),
        false => Err(StepError::new(
            ErrorType::AccessDenied,
            format!("{what}: in this deployment's own account dbroles changes only instances tagged {ORG_TAG}={}", record.org()),
        )),
    }
}

/// Lets `ingress_cidr` reach the database port through a security group of dbroles'.
pub async fn open_network(deps: &Deps, state: State) -> Result<State, StepError> {
    let record = load(deps, &state).await?;
    let Some(group) = &record.request.aws.default_security_group else { return Ok(state) };
    let network = deps.network.as_ref().ok_or_else(|| {
        StepError::new(ErrorType::NotSupported, "aws.default_security_group: this deployment cannot change security groups")
    })?;
    let instance = instance(deps, &record).await?;
    may_change(&record, &instance, "aws.default_security_group")?;
    network.open(&instance, &group.ingress_cidr).await?;
    Ok(state)
}

/// Checks that the master credentials can be read, or resets the password if the
/// request allows it. An Aurora cluster without an available writer yet (one the
/// tag trigger caught as it was created) is waited for first, as after a reset.
pub async fn master_credentials(deps: &Deps, mut state: State) -> Result<State, StepError> {
    let record = load(deps, &state).await?;
    let instance = instance(deps, &record).await?;
    if instance.kind == crate::model::request::ArnKind::Cluster && instance.status != "available" {
        state.master_ready = false;
        state.status_checks = 0;
        return Ok(state);
    }
    match deps.inventory.master_credentials(&instance).await {
        Ok(_) => state.master_ready = true,
        Err(InventoryError::NoMasterSecret(_)) if record.request.aws.allow_master_password_reset => {
            may_change(&record, &instance, "aws.allow_master_password_reset")?;
            deps.inventory.reset_master_password(&instance).await?;
            state.master_ready = false;
            state.status_checks = 0;
        }
        Err(error) => return Err(error.into()),
    }
    Ok(state)
}

/// After a reset, or for a cluster's writer: is the instance `available` (again)?
pub async fn instance_status(deps: &Deps, mut state: State) -> Result<State, StepError> {
    let record = load(deps, &state).await?;
    let instance = instance(deps, &record).await?;
    if instance.status == "available" {
        // The instance has the new master password: it becomes the one in force.
        deps.inventory.promote_master_password(&instance).await?;
        state.master_ready = true;
        return Ok(state);
    }
    state.status_checks += 1;
    if state.status_checks >= MAX_STATUS_CHECKS {
        return Err(StepError::new(
            ErrorType::InstanceNotAvailable,
            format!("{} is still '{}' after {} status checks", instance.identifier, instance.status, state.status_checks),
        ));
    }
    Ok(state)
}

/// Creates or updates the roles and stores their credentials.
pub async fn provision(deps: &Deps, state: State) -> Result<State, StepError> {
    let mut record = load(deps, &state).await?;
    let secrets = secret_store(deps, &record)?;
    let instance = instance(deps, &record).await?;
    let adopt = record.request.aws.adopt_existing_roles;
    let (inventory, settings) = (deps.inventory.as_ref(), &deps.settings);
    let results =
        provision::provision_instance(&instance, record.org(), record.id(), adopt, inventory, secrets.as_ref(), settings).await?;
    let (_, message) = jobs::outcome(&results);
    // Still running: the phase is Finalize's to set.
    record.job.status = Some(JobStatus { message, phase: Phase::Running, result: results });
    save(deps, &record).await?;
    Ok(state)
}

/// Registers a resource for the instance with one connection per provisioned role.
pub async fn create_connections(deps: &Deps, state: State) -> Result<State, StepError> {
    let record = load(deps, &state).await?;
    let instance = instance(deps, &record).await?;
    let secrets = secret_store(deps, &record)?;
    let family = Family::of(&instance.engine)
        .ok_or_else(|| StepError::new(ErrorType::UnsupportedEngine, engine::unsupported(&instance.engine)))?;
    let subtype = match family {
        Family::Postgres => "postgres",
        Family::MySql => "mysql",
    };
    let results = record.job.status.as_ref().map(|s| s.result.clone()).unwrap_or_default();
    let mut roles = Vec::new();
    for result in results.iter().filter(|r| r.status == Phase::Completed) {
        let Some(level) = Level::ALL.into_iter().find(|l| l.user(&deps.settings.role_prefix) == result.user_role) else {
            continue;
        };
        let secret_ref =
            SecretRef { user: result.user_role.clone(), ..SecretRef::for_instance(&instance, record.org(), record.id()) };
        let secret = connection_secret(secrets.as_ref(), &secret_ref).await?;
        roles.push(RoleInput {
            name: format!("{}{}", record.request.connection_prefix_name, level.suffix()),
            kind: "database".into(),
            subtype: Some(subtype.into()),
            agent_id: Some(record.request.agent_id.to_string()),
            secret,
            connection_tags: BTreeMap::from([(DB_ARN_TAG.to_string(), instance.arn.clone())]),
            default_database: Some(instance.db_name.clone()).filter(|name| !name.is_empty()),
            managed_by: "dbroles".into(),
            ..RoleInput::default()
        });
    }
    if roles.is_empty() {
        return Ok(state);
    }
    let input = ResourceInput {
        env_vars: BTreeMap::new(),
        name: instance.identifier.clone(),
        kind: "database".into(),
        agent_id: Some(record.request.agent_id.to_string()),
        roles,
        subtype: Some(subtype.into()),
    };
    input.validate().map_err(|invalid| StepError::new(ErrorType::InvalidInput, invalid.0))?;
    let previous = deps.resources.get_resource(record.org(), &instance.identifier).await?;
    if let Some(previous) = previous.as_ref().filter(|previous| !made_by_dbroles_for(previous, &instance.arn)) {
        return Err(StepError::new(
            ErrorType::ProvisioningFailed,
            format!(
                "the resource {} exists and dbroles did not create it for {}: dbroles does not replace it",
                previous.name, instance.arn
            ),
        ));
    }
    deps.resources.put_resource(&input.into_resource(record.org(), previous.as_ref())).await?;
    Ok(state)
}

/// A resource create-connections made for this instance: every connection dbroles-managed and tagged with it.
fn made_by_dbroles_for(resource: &crate::model::resource::Resource, arn: &str) -> bool {
    !resource.roles.is_empty()
        && resource.roles.iter().all(|role| {
            role.input.managed_by == "dbroles" && role.input.connection_tags.get(DB_ARN_TAG).map(String::as_str) == Some(arn)
        })
}

/// The connection variables hoop.dev's agents read, each with the stored key it comes from.
const CONNECTION_KEYS: [(&str, &str); 5] =
    [("envvar:HOST", "HOST"), ("envvar:PORT", "PORT"), ("envvar:USER", "USER"), ("envvar:PASS", "PASSWORD"), ("envvar:DB", "DB")];

/// The tag hoop.dev gives a connection to the instance it reaches.
pub const DB_ARN_TAG: &str = "hoop.dev/aws-connect.dbarn";

/// A connection's secret as hoop.dev's agents read it, every value base64: references
/// into the store (`_aws:<secret>:<key>`, `_vaultkv2:...`). For the `database`
/// provider the values, but the password only as a reference
/// (`_dbroles:<secret>:PASSWORD`): the resource item is not sealed as the
/// credentials are, and the API function may read it, so no password is copied there.
async fn connection_secret(secrets: &dyn SecretStore, secret_ref: &SecretRef) -> Result<BTreeMap<String, String>, StepError> {
    use base64::Engine as _;
    let encode = |value: &str| base64::engine::general_purpose::STANDARD.encode(value);
    let secret_id = secrets.secret_id(secret_ref);
    let reference = |scheme: &str, key: &str| encode(&format!("{scheme}:{secret_id}:{key}"));
    let all = |scheme: &str| CONNECTION_KEYS.iter().map(|(name, key)| (name.to_string(), reference(scheme, key))).collect();
    match secrets.provider() {
        SecretsProvider::AwsSecretsManager => Ok(all("_aws")),
        SecretsProvider::Vault => Ok(all("_vaultkv2")),
        SecretsProvider::Database => {
            let credentials = secrets.read(&secret_id).await?.ok_or_else(|| {
                StepError::new(ErrorType::ProvisioningFailed, format!("no stored credentials for {}", secret_ref.user))
            })?;
            let port = credentials.port.to_string();
            let password = reference("_dbroles", "PASSWORD");
            let values = [encode(&credentials.host), encode(&port), encode(&credentials.user), password, encode(&credentials.db)];
            Ok(CONNECTION_KEYS.iter().zip(values).map(|((name, _), value)| (name.to_string(), value)).collect())
        }
    }
}

/// Runs the deployment's hook with the job (no secrets) and records its outcome.
pub async fn hook(deps: &Deps, state: State) -> Result<State, StepError> {
    let Some(hook) = &deps.hook else { return Ok(state) };
    let mut record = load(deps, &state).await?;
    let started = Instant::now();
    let outcome = hook.run(&record.job).await;
    let mut output = outcome.output;
    if output.len() > HOOK_OUTPUT_LIMIT {
        let mut end = HOOK_OUTPUT_LIMIT;
        while !output.is_char_boundary(end) {
            end -= 1;
        }
        output.truncate(end);
    }
    record.job.hook_status =
        Some(HookStatus { execution_time_sec: started.elapsed().as_secs() as i64, exit_code: outcome.exit_code, output });
    save(deps, &record).await?;
    Ok(state)
}

/// Writes the final status, releases the lock and announces the finished job.
pub async fn finalize(deps: &Deps, mut state: State) -> Result<State, StepError> {
    jobs::finalize(deps, &state.input(), state.error.as_ref().map(|error| error.message())).await?;
    let record = deps.jobs.get_job(&state.org_id, &state.job_id).await?;
    state.phase = record.map(|record| record.job.phase());
    Ok(state)
}

/// Sends the finished job to the webhook and records how that went; never fails the job.
pub async fn webhook(deps: &Deps, state: State) -> Result<State, StepError> {
    if !state.send_webhook {
        return Ok(state);
    }
    let Some(mut record) = deps.jobs.get_job(&state.org_id, &state.job_id).await? else { return Ok(state) };
    let status = match &deps.webhook {
        Some(webhook) => webhook.deliver(&record.job).await,
        None => crate::model::job::WebhookStatus {
            delivered: false,
            attempts: 0,
            status_code: None,
            message: "no webhook URL is configured".into(),
        },
    };
    record.job.webhook_status = Some(status);
    deps.jobs.save_finished(&record).await?;
    Ok(state)
}
