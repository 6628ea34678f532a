//! dbroles: provisions least-privilege database roles on RDS and Aurora.
//!
//! - [`job`], [`request`], [`resource`]: the contract of the seeds.
//! - [`jobs`]: a job's life, every state change of a job in one place; [`fleet`]:
//!   fleet jobs, one request over every instance a selector picks;
//!   [`accounts`]: which organisation may act on which AWS account.
//! - Ports and their adapters: [`store`] (`JobStore`, `FleetStore`, `ResourceStore`,
//!   `AccountStore`, `CredentialStore`: DynamoDB, SQLite), [`inventory`] (RDS, a local file),
//!   [`secrets`] (Secrets Manager, Vault KV v2, dbroles' own store), [`network`]
//!   (EC2 security groups), [`notify`] (EventBridge, the hook Lambda, the webhook),
//!   [`workflow`] (Step Functions, the local executor).
//! - [`deps`]: the dependency containers; [`config`]: the settings from the environment.
//! - [`engine`]: the roles and grants on PostgreSQL and MySQL/MariaDB; [`provision`]:
//!   one instance's roles, with their credentials staged and confirmed.
//! - [`steps`]: the state machine's Tasks; [`triggers`]: the EventBridge rules.
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
