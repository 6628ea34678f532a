//! dbroles: provisions least-privilege database roles on RDS and Aurora.
//!
//! The crate is layered; no module imports one that imports it back
//! (`scripts/layering.py` checks it):
//!
//! - [`model`]: what is stored and shown (the seeds' contract), importing no service, port or adapter.
//! - [`config`]: the only reader of the environment, into typed sections.
//! - Ports, each a trait with its types, and their adapters beside it: [`store`]
//!   (DynamoDB, SQLite), [`inventory`] (RDS, a local file), [`secrets`] (Secrets
//!   Manager, Vault KV v2, dbroles' own store), [`network`] (EC2 security groups),
//!   [`notify`] (EventBridge, the hook Lambda, the webhook), [`workflow`] (Step Functions).
//! - [`deps`]: the containers of ports; [`wiring`]: the one place that builds the adapters.
//! - [`lifecycle`]: every change of a job, a fleet job and an account registration.
//! - [`engine`]: the roles and grants on PostgreSQL and MySQL/MariaDB; [`provision`]:
//!   one instance's roles, with their credentials staged and confirmed.
//! - [`steps`]: the state machines' Tasks, one file each; [`executor`]: the same
//!   definitions run in process; [`triggers`]: the EventBridge rules.
//! - [`api`]: the HTTP API (axum), shared by the Lambda and the local server.

pub mod api;
pub mod auth;
pub mod aws;
pub mod config;
pub mod deps;
pub mod executor;
/// The role engine, a crate of its own (no AWS): `dbroles_core::engine` as before.
pub use dbroles_engine as engine;
pub mod inventory;
pub mod lifecycle;
pub mod metrics;
pub mod model;
pub mod network;
pub mod notify;
pub mod provision;
pub mod secrets;
pub mod steps;
pub mod store;
pub mod triggers;
pub mod wiring;
pub mod workflow;
