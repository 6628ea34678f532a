//! The model: every type dbroles stores or shows, and nothing else. It imports
//! no service, port or adapter; they all import it.
//!
//! - [`request`]: the requests of the seeds' contract, and the ids parsed from them
//!   ([`request::InstanceArn`], [`request::VaultPath`]);
//! - [`job`]: the job as seeds 000/001 show it, and the record the store keeps;
//! - [`fleet`]: fleet jobs, their selector, counts, and the Map's items;
//! - [`account`]: registered accounts, how an organisation reaches one, and server owners;
//! - [`resource`]: the resources (connections) of `/dbroles/resources`;
//! - ids and instants: [`Timestamp`], [`AccountId`], [`AgentId`], [`new_id`].

pub mod account;
pub mod fleet;
mod ids;
pub mod job;
pub mod request;
pub mod resource;
pub mod scope;

pub use ids::{new_id, AccountId, AgentId, Timestamp};
