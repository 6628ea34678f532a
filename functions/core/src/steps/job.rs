//! What the provisioning steps share: the job they work on (read through
//! [`jobs::load_running`], which refuses a job no longer running, and saved
//! through [`jobs::save_progress`]), its instance, and where its credentials go.

use std::sync::Arc;

use super::{ErrorType, State, StepError};
use crate::deps::Deps;
use crate::inventory::Instance;
use crate::lifecycle::jobs;
use crate::model::account::{Access, ORG_TAG};
use crate::model::job::JobRecord;
use crate::secrets::SecretStore;
use crate::wiring::NoStore;

pub(super) async fn load(deps: &Deps, state: &State) -> Result<JobRecord, StepError> {
    Ok(jobs::load_running(deps.jobs.as_ref(), &state.input()).await?)
}

pub(super) async fn save(deps: &Deps, record: &JobRecord) -> Result<(), StepError> {
    Ok(jobs::save_progress(deps.jobs.as_ref(), record).await?)
}

/// How the job reaches its instance's account: what [`jobs::start`] checked and recorded.
pub(super) fn access(record: &JobRecord) -> Result<&Access, StepError> {
    record.access.as_ref().ok_or_else(|| {
        StepError::new(ErrorType::AccessDenied, format!("job {} records no access to its instance's account", record.id()))
    })
}

/// The job's instance, as long as it is the server the job was created for: one
/// deleted and created again under the same ARN is another server, perhaps another's.
pub(super) async fn instance(deps: &Deps, record: &JobRecord) -> Result<Instance, StepError> {
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
pub(super) fn secret_store(deps: &Deps, record: &JobRecord) -> Result<Arc<dyn SecretStore>, StepError> {
    crate::wiring::secret_store_for(deps, record.org(), &record.request).map_err(|error| {
        let kind = if error == NoStore::NoVault { ErrorType::NotSupported } else { ErrorType::InvalidInput };
        StepError::new(kind, error.to_string())
    })
}

/// Changes to an instance of the deployment's own account need it tagged for the job's organisation.
pub(super) fn may_change(record: &JobRecord, instance: &Instance, what: &str) -> Result<(), StepError> {
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
