//! The provision step: creates or updates the roles in every database and stores their credentials.

use super::job::{instance, load, save, secret_store};
use super::{State, StepError};
use crate::deps::Deps;
use crate::lifecycle::jobs;
use crate::model::job::{JobStatus, Phase};
use crate::provision::{provision_instance, Options};

/// Creates or updates the roles and stores their credentials.
pub(super) async fn run(deps: &Deps, state: State) -> Result<State, StepError> {
    let mut record = load(deps, &state).await?;
    let secrets = secret_store(deps, &record)?;
    let instance = instance(deps, &record).await?;
    let options =
        Options { adopt: record.request.aws.adopt_existing_roles, rotation: deps.settings.rotation_of(&record.request) };
    let (inventory, settings) = (deps.inventory.as_ref(), &deps.settings);
    let results =
        provision_instance(&instance, record.org(), record.id(), options, inventory, secrets.as_ref(), settings).await?;
    let (_, message) = jobs::outcome(&results);
    // Still running: the phase is Finalize's to set.
    record.job.status = Some(JobStatus { message, phase: Phase::Running, result: results });
    save(deps, &record).await?;
    Ok(state)
}
