//! The dependency containers, built once at start ([`crate::wiring`] builds them)
//! and handed in: [`Deps`], the ports the steps reach, and [`App`], the ports the
//! job lifecycle, the API and the triggers reach. They name ports only, never an adapter.

use std::sync::Arc;

use crate::config::{Settings, VaultSettings};
use crate::inventory::Inventory;
use crate::network::Network;
use crate::notify::{Events, Hook, Webhook};
use crate::secrets::SecretStore;
use crate::store::{AccountStore, FleetStore, JobStore, ResourceStore};
use crate::workflow::Workflow;

/// Everything the steps reach: the stores, the instances, the secret stores and the notifications.
#[derive(Clone)]
pub struct Deps {
    pub jobs: Arc<dyn JobStore>,
    pub fleets: Arc<dyn FleetStore>,
    pub resources: Arc<dyn ResourceStore>,
    /// The AWS accounts organisations registered.
    pub accounts: Arc<dyn AccountStore>,
    pub inventory: Arc<dyn Inventory>,
    /// Where credentials go when the job names no Vault path.
    pub secrets: Arc<dyn SecretStore>,
    /// The Vault a job's `vault_provider.secret_id` refers to, if the deployment has one.
    pub vault: Option<VaultSettings>,
    pub network: Option<Arc<dyn Network>>,
    pub events: Option<Arc<dyn Events>>,
    pub hook: Option<Arc<dyn Hook>>,
    pub webhook: Option<Arc<dyn Webhook>>,
    pub settings: Settings,
    /// The provisioning state machine (`DBROLES_STATE_MACHINE_ARN`), whose
    /// executions a fleet's Map starts; none locally.
    pub provision_machine: Option<String>,
}

/// What the job lifecycle, the API and the triggers reach: the steps'
/// dependencies, and the workflow that carries jobs out.
#[derive(Clone)]
pub struct App {
    pub deps: Deps,
    pub workflow: Arc<dyn Workflow>,
}

impl App {
    /// The steps' dependencies, with `workflow` to carry jobs out.
    pub fn new(deps: &Deps, workflow: Arc<dyn Workflow>) -> Self {
        Self { deps: deps.clone(), workflow }
    }
}
