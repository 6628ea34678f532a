//! The provision step: creates or updates the roles in every database and stores
//! their credentials, or in mode `revoke` retires them and removes their
//! credentials and connections.

use super::create_connections::made_by_dbroles_for;
use super::job::{instance, load, save, secret_store};
use super::{State, StepError};
use crate::deps::Deps;
use crate::inventory::Instance;
use crate::lifecycle::jobs;
use crate::model::job::{JobStatus, Phase, RoleResult};
use crate::model::request::Mode;
use crate::provision::{provision_instance, Options};

/// Creates or updates the roles and stores their credentials; or retires them.
pub(super) async fn run(deps: &Deps, state: State) -> Result<State, StepError> {
    let mut record = load(deps, &state).await?;
    let secrets = secret_store(deps, &record)?;
    let instance = instance(deps, &record).await?;
    let request = &record.request;
    let options = Options {
        adopt: request.aws.adopt_existing_roles,
        rotation: deps.settings.rotation_of(request),
        mode: request.mode,
        scope: &request.scope,
    };
    let (inventory, settings) = (deps.inventory.as_ref(), &deps.settings);
    let mut results =
        provision_instance(&instance, record.org(), record.id(), options, inventory, secrets.as_ref(), settings).await?;
    if options.mode == Mode::Revoke {
        remove_connections(deps, record.org(), &instance, &mut results).await?;
    }
    let (_, message) = jobs::outcome(&results);
    // Still running: the phase is Finalize's to set.
    record.job.status = Some(JobStatus { message, phase: Phase::Running, result: results });
    save(deps, &record).await?;
    Ok(state)
}

/// Once every role is retired, the resource create-connections made for the
/// instance goes too; one it did not make is left, and the results say so.
async fn remove_connections(deps: &Deps, org: &str, instance: &Instance, results: &mut [RoleResult]) -> Result<(), StepError> {
    if results.iter().any(|result| result.status != Phase::Completed) {
        return Ok(());
    }
    let Some(resource) = deps.resources.get_resource(org, &instance.identifier).await? else { return Ok(()) };
    let note = match made_by_dbroles_for(&resource, &instance.arn) {
        true => {
            deps.resources.delete_resource(org, &resource.name).await?;
            format!("; its connection in the resource {} is removed", resource.name)
        }
        false => format!("; the resource {} is not dbroles' and is left as it is", resource.name),
    };
    results.iter_mut().for_each(|result| result.message += &note);
    Ok(())
}
