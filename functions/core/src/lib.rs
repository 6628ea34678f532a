//! dbroles: provisions least-privilege database roles on RDS and Aurora.
//!
//! - [`job`], [`request`], [`resource`]: the contract of the seeds.
//! - Ports and their adapters: [`store`] (`JobStore`, `ResourceStore`,
//!   `CredentialStore`: DynamoDB, SQLite), [`inventory`] (RDS, a local file),
//!   [`secrets`] (Secrets Manager, Vault KV v2, dbroles' own store).
//! - [`engine`]: the roles and grants on PostgreSQL and MySQL/MariaDB.
//! - [`api`]: the HTTP API, shared by the Lambda and the local server.

pub mod api;
pub mod auth;
pub mod config;
pub mod engine;
pub mod inventory;
pub mod job;
pub mod provision;
pub mod request;
pub mod resource;
pub mod runner;
pub mod secrets;
pub mod steps;
pub mod store;
pub mod triggers;
pub mod workflow;
