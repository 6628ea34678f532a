//! The provision step: creates or updates the roles in every database and stores
//! their credentials, or in mode `revoke` retires them and removes their
//! credentials and connections.

use super::create_connections::connection_name;
use super::job::{instance, load, save, secret_store};
use super::{State, StepError};
use crate::deps::Deps;
use crate::inventory::Instance;
use crate::lifecycle::jobs;
use crate::model::job::{JobRecord, JobStatus, Phase, RoleResult};
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
        max_connections: Some(deps.settings.max_db_connections_of(request)),
    };
    let (inventory, settings) = (deps.inventory.as_ref(), &deps.settings);
    let mut results =
        provision_instance(&instance, record.org(), record.id(), options, inventory, secrets.as_ref(), settings).await?;
    if options.mode == Mode::Revoke {
        remove_connections(deps, &record, &instance, &mut results).await?;
    }
    let (_, message) = jobs::outcome(options.mode, &results);
    // Still running: the phase is Finalize's to set.
    record.job.status = Some(JobStatus { message, phase: Phase::Running, result: results });
    save(deps, &record).await?;
    Ok(state)
}

/// The connections create-connections made for the retired levels go too (the
/// whole resource once none is left); a resource dbroles did not make is left,
/// and the results say so.
async fn remove_connections(
    deps: &Deps,
    record: &JobRecord,
    instance: &Instance,
    results: &mut [RoleResult],
) -> Result<(), StepError> {
    let Some(mut resource) = deps.resources.get_resource(record.org(), &instance.identifier).await? else { return Ok(()) };
    if !resource.made_by_dbroles_for(&instance.arn) {
        let note = format!("; the resource {} is not dbroles' and is left as it is", resource.name);
        results.iter_mut().for_each(|result| result.message += &note);
        return Ok(());
    }
    // Each retired role's connection, by the name create-connections gave it.
    let connection = |result: &RoleResult| connection_name(deps, record, result);
    let retired: Vec<String> = results.iter().filter(|result| result.status == Phase::Completed).filter_map(connection).collect();
    let removed: Vec<String> =
        resource.roles.iter().map(|role| role.input.name.clone()).filter(|name| retired.contains(name)).collect();
    if removed.is_empty() {
        return Ok(());
    }
    resource.roles.retain(|role| !removed.contains(&role.input.name));
    match resource.roles.is_empty() {
        true => deps.resources.delete_resource(record.org(), &resource.name).await?,
        false => deps.resources.put_resource(&resource).await?,
    }
    for result in results.iter_mut() {
        if connection(result).is_some_and(|name| removed.contains(&name)) {
            result.message += &format!("; its connection in the resource {} is removed", resource.name);
        }
    }
    Ok(())
}
