//! Servers that are gone: an instance or Aurora cluster dbroles provisioned was
//! deleted. RDS says so with an event on the instance's own account's bus, best
//! effort, and a registered account's events never reach the deployment's bus,
//! so a daily sweep also goes over every provisioned server. Either way the
//! server is first checked to be really gone (nothing under its ARN, or a server
//! with another resource id), then its stored credentials, the connections
//! dbroles made for it and its provisioned record are removed, and a finished
//! revoke job records what was done.

use std::collections::HashMap;

use crate::deps::App;
use crate::engine::Level;
use crate::lifecycle::accounts::{self, Tenancy};
use crate::lifecycle::jobs::{self, JobError};
use crate::model::account::Access;
use crate::model::job::{JobSpec, Phase, RoleResult};
use crate::model::request::{InstanceArn, Invalid, Mode};
use crate::model::Timestamp;
use crate::secrets::SecretRef;
use crate::store::{NewJob, Provisioned, StoreError};

/// What became of one provisioned server.
#[derive(Debug, Clone, PartialEq)]
pub enum Gone {
    /// It exists (the same server): nothing is removed.
    StillThere,
    /// It could not be checked (the organisation may no longer reach its account).
    Unchecked(String),
    /// A job still runs on it: the next sweep retires it once that job ends.
    Busy,
    /// Gone: what dbroles kept for it is removed, as the job says.
    Retired { job_id: String },
}

/// The provisioned servers an RDS deletion event names (an instance, or a cluster), each checked.
pub async fn deleted(app: &App, arn: &str) -> Result<Vec<(String, Gone)>, JobError> {
    let provisioned = app.deps.jobs.provisioned().await?;
    let named = provisioned.into_iter().filter(|p| p.db_arn == arn || p.server_arn.as_deref() == Some(arn));
    Ok(check_each(app, named, "eventbridge:rds-deleted").await)
}

/// Every provisioned server, each checked: the backstop for deletion events that never came.
pub async fn sweep(app: &App) -> Result<Vec<(String, Gone)>, JobError> {
    let provisioned = app.deps.jobs.provisioned().await?;
    Ok(check_each(app, provisioned.into_iter(), "eventbridge:gone-sweep").await)
}

async fn check_each(app: &App, provisioned: impl Iterator<Item = Provisioned>, created_by: &str) -> Vec<(String, Gone)> {
    // Which organisations may act on each account, read once per account, not once per server.
    let mut reach: HashMap<String, Vec<(String, Access)>> = HashMap::new();
    let mut outcomes = Vec::new();
    for provisioned in provisioned {
        // One server that cannot be checked (its account's role removed, say) does not stop the others.
        let gone =
            check(app, &mut reach, &provisioned, created_by).await.unwrap_or_else(|error| Gone::Unchecked(error.to_string()));
        outcomes.push((provisioned.db_arn, gone));
    }
    outcomes
}

/// Checks that the server is gone, and if it is, retires what dbroles kept for it.
async fn check(
    app: &App,
    reach: &mut HashMap<String, Vec<(String, Access)>>,
    provisioned: &Provisioned,
    created_by: &str,
) -> Result<Gone, JobError> {
    let arn: InstanceArn =
        provisioned.db_arn.parse().map_err(|e| Invalid(format!("the provisioned record {}: {e}", provisioned.db_arn)))?;
    if !reach.contains_key(&arn.account) {
        let allowed = accounts::organisations(Tenancy::of(&app.deps), &arn.account).await?;
        reach.insert(arn.account.clone(), allowed);
    }
    let Some((_, access)) = reach[&arn.account].iter().find(|(org, _)| *org == provisioned.org) else {
        return Ok(Gone::Unchecked(format!("organisation {} may no longer act on account {}", provisioned.org, arn.account)));
    };
    let found = app.deps.inventory.describe(&arn, access).await?;
    let same = |resource_id: &str| provisioned.resource_id.as_deref().is_none_or(|id| id == resource_id);
    if found.is_some_and(|instance| same(&instance.resource_id)) {
        return Ok(Gone::StillThere);
    }
    retire(app, provisioned, access.clone(), created_by).await
}

/// Removes the credentials, the connections and the provisioned record of a
/// server that is gone, under its lock, as a finished revoke job.
async fn retire(app: &App, provisioned: &Provisioned, access: Access, created_by: &str) -> Result<Gone, JobError> {
    let mut request = provisioned.request.clone();
    request.mode = Mode::Revoke;
    let account = request.instance_arn().account;
    let spec =
        JobSpec { account_arn: format!("arn:aws:iam::{account}:root"), db_arn: provisioned.db_arn.clone(), ..JobSpec::default() };
    let mut record = jobs::new_record(&provisioned.org, created_by, request, spec);
    record.lock = provisioned.server_arn.clone().unwrap_or_else(|| provisioned.db_arn.clone());
    record.access = Some(access);
    record.resource_id = provisioned.resource_id.clone();
    record.endpoint_host = provisioned.endpoint_host.clone();
    let new = NewJob { record: record.clone(), idempotency: None, lease_until: app.deps.settings.lease() };
    match app.deps.jobs.create_job(new).await {
        Err(StoreError::Locked { .. }) => return Ok(Gone::Busy),
        created => created?,
    };
    let results = forget(app, provisioned, &record.lock).await;
    let failed = results.iter().any(|result| result.status != Phase::Completed);
    record.job.status.as_mut().expect("a new job has a status").result = results;
    let message = match failed {
        false => "the server is gone: its roles' stored credentials and connections are removed",
        true => "the server is gone, but some of what dbroles kept for it could not be removed: the next sweep tries again",
    };
    record.finish(if failed { Phase::Failed } else { Phase::Completed }, message);
    app.deps.jobs.finish_and_release(&record, app.deps.settings.expiry()).await?;
    if !failed {
        app.deps.jobs.forget_provisioned(&provisioned.org, &provisioned.db_arn).await?;
    }
    Ok(Gone::Retired { job_id: record.id().to_string() })
}

/// Each level's stored credentials deleted, then the connections dbroles made: one result per level.
async fn forget(app: &App, provisioned: &Provisioned, server: &str) -> Vec<RoleResult> {
    let secrets = crate::wiring::secret_store_for(&app.deps, &provisioned.org, &provisioned.request);
    let instance_id = server.parse::<InstanceArn>().map(|arn| arn.id).unwrap_or_default();
    let mut results = Vec::new();
    for level in Level::ALL {
        let user = level.user(&app.deps.settings.role_prefix);
        let secret = SecretRef {
            org: provisioned.org.clone(),
            instance_id: instance_id.clone(),
            instance_arn: server.to_string(),
            job_id: String::new(),
            user: user.clone(),
            host: provisioned.endpoint_host.clone().unwrap_or_default(),
        };
        let deleted = match &secrets {
            Ok(store) => store.delete(&store.secret_id(&secret)).await.map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        let (status, message) = match deleted {
            Ok(()) => (Phase::Completed, format!("role {user}: the server is gone; its stored credentials are deleted")),
            Err(error) => {
                (Phase::Failed, format!("role {user}: the server is gone; its stored credentials could not be deleted: {error}"))
            }
        };
        let credentials_info = secrets.as_ref().ok().map(|store| store.info(&secret));
        let (completed_at, active_login, changes, not_revocable) = (Timestamp::now(), None, None, Vec::new());
        results.push(RoleResult {
            completed_at,
            credentials_info,
            message,
            status,
            user_role: user,
            active_login,
            changes,
            not_revocable,
        });
    }
    if let Err(error) = remove_resource(app, provisioned).await {
        let note = format!("; the connections could not be removed: {error}");
        results.iter_mut().for_each(|result| (result.status, result.message) = (Phase::Failed, result.message.clone() + &note));
    }
    results
}

/// The resource create-connections made for the instance (named after it), if dbroles made it.
async fn remove_resource(app: &App, provisioned: &Provisioned) -> Result<(), StoreError> {
    let name = provisioned.db_arn.parse::<InstanceArn>().map(|arn| arn.id).unwrap_or_default();
    let Some(resource) = app.deps.resources.get_resource(&provisioned.org, &name).await? else { return Ok(()) };
    match resource.made_by_dbroles_for(&provisioned.db_arn) {
        true => app.deps.resources.delete_resource(&provisioned.org, &name).await,
        false => Ok(()),
    }
}
