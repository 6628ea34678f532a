//! The `JobStore`, `FleetStore`, `ResourceStore`, `AccountStore` and `CredentialStore` ports, with a DynamoDB
//! adapter for AWS and an SQLite adapter for the local server.
//!
//! Both adapters keep the same logical items; [`dynamodb`] documents the key design.

pub mod dynamodb;
pub mod sqlite;

use std::collections::BTreeMap;

use async_trait::async_trait;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::model::account::{Account, ServerOwner};
use crate::model::fleet::{FleetRecord, NotStarted};
use crate::model::job::{Job, JobRecord, Phase};
use crate::model::request::CreateJobRequest;
use crate::model::resource::Resource;
use crate::model::Timestamp;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    /// The database server is held by a running job, perhaps another organisation's.
    #[error("a job is already running on this database server: {job_id}")]
    Locked { job_id: String, org: String },
    #[error("the Idempotency-Key was used with another request body")]
    IdempotencyMismatch,
    #[error("{0} already exists")]
    Conflict(String),
    #[error("not found")]
    NotFound,
    #[error("the job is still running")]
    Running,
    #[error("next_token: not a token this listing gave out")]
    BadToken,
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A job to create, with its idempotency key if the caller sent one.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub record: JobRecord,
    pub idempotency: Option<Idempotency>,
    /// Until when the job's lock on its database server holds if nothing releases it.
    pub lease_until: Timestamp,
}

#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    /// SHA-256 of the canonical request body.
    pub body_hash: String,
    pub expires_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    New,
    /// The key was used before with the same body: the job it created.
    Replayed(String),
}

/// Filters and paging of `GET /dbroles/jobs`.
#[derive(Debug, Clone, Default)]
pub struct JobQuery {
    pub phase: Option<Phase>,
    pub db_arn: Option<String>,
    pub db_engine: Option<String>,
    pub created_after: Option<Timestamp>,
    pub created_before: Option<Timestamp>,
    pub limit: usize,
    pub next_token: Option<String>,
    /// How many matching jobs to pass over first (seed 004's `page.start`, less one).
    pub skip: usize,
    /// Only the jobs of this fleet job.
    pub fleet_job_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_token: Option<String>,
}

/// `GET /dbroles/jobs/stats` (seed 004's `stat`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobStats {
    pub total_count: u64,
    pub by_phase: BTreeMap<String, u64>,
    pub by_engine: BTreeMap<String, u64>,
}

impl JobStats {
    fn count(&mut self, phase: &str, engine: &str) {
        self.total_count += 1;
        *self.by_phase.entry(phase.to_string()).or_default() += 1;
        *self.by_engine.entry(engine.to_string()).or_default() += 1;
    }

    fn with_all_phases(mut self) -> Self {
        for phase in Phase::ALL {
            self.by_phase.entry(phase.as_str().to_string()).or_default();
        }
        self
    }
}

/// A database server's lock, as the sweeper lists them.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerLock {
    pub server: String,
    pub org: String,
    pub job_id: String,
    pub lease_until: Timestamp,
}

/// An instance dbroles has provisioned, for the rotation schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provisioned {
    pub org: String,
    pub db_arn: String,
    pub request: CreateJobRequest,
    /// The server's immutable id when it was provisioned: an instance created
    /// again under the same ARN is not rotated with these records.
    #[serde(default)]
    pub resource_id: Option<String>,
    /// The server the roles are on (the Aurora cluster of an instance) and its
    /// endpoint's host: where their credentials are kept, for removing them once
    /// the server is gone. Absent on records of older versions.
    #[serde(default)]
    pub server_arn: Option<String>,
    #[serde(default)]
    pub endpoint_host: Option<String>,
}

/// A job store keeps one lock per database server ([`JobRecord::lock_key`]),
/// whichever organisation asks: a job holds it from its creation until its
/// execution has ended ([`JobStore::release_lock`]), or until its lease runs out.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Stores a running job and takes its server's lock (free, or its lease run out), atomically.
    async fn create_job(&self, new: NewJob) -> StoreResult<Created>;
    async fn get_job(&self, org: &str, id: &str) -> StoreResult<Option<JobRecord>>;
    /// Saves a running job; `false` (and nothing written) if it has finished meanwhile.
    async fn update_job(&self, record: &JobRecord) -> StoreResult<bool>;
    /// Writes a finished job and sets its expiry; `false` if it had already
    /// finished (a cancel and a late step, say). The lock stays until released.
    async fn finish_job(&self, record: &JobRecord, expires_at: Timestamp) -> StoreResult<bool>;
    /// Releases the server's lock if `job_id` holds it.
    async fn release_lock(&self, server: &str, job_id: &str) -> StoreResult<()>;
    /// At the end of a job's execution: writes the finished job (as [`JobStore::finish_job`])
    /// and releases its server's lock if it holds it, in one write, so nobody sees
    /// the job finished and its server still held. `false` if the job had already
    /// finished (a cancel): then only the lock is released.
    async fn finish_and_release(&self, record: &JobRecord, expires_at: Timestamp) -> StoreResult<bool>;
    /// Saves what happens after a job finished (the webhook's outcome), keeping its
    /// phase and expiry; `false` if the job is running or gone.
    async fn save_finished(&self, record: &JobRecord) -> StoreResult<bool>;
    /// `NotFound`, or `Running` while the job runs.
    async fn delete_job(&self, org: &str, id: &str) -> StoreResult<()>;
    /// Newest first.
    async fn list_jobs(&self, org: &str, query: &JobQuery) -> StoreResult<Page<Job>>;
    /// How many jobs match the query's filters (its paging aside).
    async fn count_jobs(&self, org: &str, query: &JobQuery) -> StoreResult<u64>;
    async fn job_stats(&self, org: &str) -> StoreResult<JobStats>;
    /// Remembers a provisioned instance (the rotation schedule's list).
    async fn mark_provisioned(&self, provisioned: &Provisioned) -> StoreResult<()>;
    async fn provisioned(&self) -> StoreResult<Vec<Provisioned>>;
    /// Forgets a provisioned instance (its roles were retired); none there is no error.
    async fn forget_provisioned(&self, org: &str, db_arn: &str) -> StoreResult<()>;
    /// One organisation's provisioned instance, if dbroles provisioned it.
    async fn get_provisioned(&self, org: &str, db_arn: &str) -> StoreResult<Option<Provisioned>>;
    /// Every database server's lock, whoever holds it: the sweeper's round.
    async fn locks(&self) -> StoreResult<Vec<ServerLock>>;
}

#[async_trait]
pub trait ResourceStore: Send + Sync {
    /// `Conflict` if the name is taken.
    async fn create_resource(&self, resource: &Resource) -> StoreResult<()>;
    /// Creates or replaces.
    async fn put_resource(&self, resource: &Resource) -> StoreResult<()>;
    async fn get_resource(&self, org: &str, name: &str) -> StoreResult<Option<Resource>>;
    /// `NotFound` if there was none.
    async fn delete_resource(&self, org: &str, name: &str) -> StoreResult<()>;
    /// By name.
    async fn list_resources(&self, org: &str, limit: usize, next_token: Option<&str>) -> StoreResult<Page<Resource>>;
}

/// Fleet jobs. A fleet job's own jobs are ordinary jobs naming it (`JobQuery::fleet_job_id`).
#[async_trait]
pub trait FleetStore: Send + Sync {
    async fn create_fleet(&self, record: &FleetRecord) -> StoreResult<()>;
    async fn get_fleet(&self, org: &str, id: &str) -> StoreResult<Option<FleetRecord>>;
    /// Saves a running fleet job; `false` (and nothing written) if it has finished meanwhile.
    async fn update_fleet(&self, record: &FleetRecord) -> StoreResult<bool>;
    /// Writes a finished fleet job and sets its expiry; `false` if it had already finished.
    async fn finish_fleet(&self, record: &FleetRecord, expires_at: Timestamp) -> StoreResult<bool>;
    /// Adds an instance the fleet job started no job for; concurrent calls all count.
    async fn note_not_started(&self, org: &str, id: &str, note: &NotStarted) -> StoreResult<()>;
    /// `NotFound`, or `Running` while it runs.
    async fn delete_fleet(&self, org: &str, id: &str) -> StoreResult<()>;
    /// Newest first.
    async fn list_fleets(&self, org: &str, limit: usize, next_token: Option<&str>) -> StoreResult<Page<FleetRecord>>;
    /// Every organisation's fleet jobs still running, for the sweep.
    async fn running_fleets(&self) -> StoreResult<Vec<FleetRecord>>;
}

/// The AWS accounts organisations registered.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Creates or replaces the organisation's registration of the account.
    async fn put_account(&self, account: &Account) -> StoreResult<()>;
    async fn get_account(&self, org: &str, account_id: &str) -> StoreResult<Option<Account>>;
    /// By account id.
    async fn list_accounts(&self, org: &str) -> StoreResult<Vec<Account>>;
    /// Every organisation's registration of one account.
    async fn registrations(&self, account_id: &str) -> StoreResult<Vec<Account>>;
    /// `NotFound` if there was none.
    async fn delete_account(&self, org: &str, account_id: &str) -> StoreResult<()>;
    /// Records `owner` as the server's owner unless it has one: the owner either way.
    async fn claim_server(&self, owner: &ServerOwner) -> StoreResult<ServerOwner>;
    async fn server_owner(&self, resource_id: &str) -> StoreResult<Option<ServerOwner>>;
}

/// The `database` credentials provider: secret values kept by dbroles itself.
#[async_trait]
pub trait CredentialStore: Send + Sync {
    async fn put_credential(&self, id: &str, value: &str) -> StoreResult<()>;
    async fn get_credential(&self, id: &str) -> StoreResult<Option<String>>;
    /// Removes it; none there is no error.
    async fn delete_credential(&self, id: &str) -> StoreResult<()>;
}

/// The sort key of a job in its organisation's listing: creation time, then id.
pub(crate) fn job_sort_key(job: &Job) -> String {
    format!("{:013}#{}", job.created_at.millis().max(0), job.id)
}

/// Bounds on the sort key for `created_after` (exclusive) and `created_before` (exclusive).
pub(crate) fn sort_bounds(query: &JobQuery) -> (String, String) {
    let low = query.created_after.map_or_else(String::new, |t| format!("{:013}", t.millis() + 1));
    let high = query.created_before.map_or_else(|| "~".to_string(), |t| format!("{:013}", t.millis().max(0)));
    (low, high)
}

/// An opaque paging token: the organisation, the last key handed out, and the
/// listing's total, counted once, on its first page.
#[derive(Serialize, Deserialize)]
struct Token {
    o: String,
    k: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    n: Option<u64>,
}

fn encode(token: &Token) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(token).unwrap_or_default())
}

fn decode(org: &str, token: &str) -> StoreResult<Token> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| StoreError::BadToken)?;
    let token: Token = serde_json::from_slice(&bytes).map_err(|_| StoreError::BadToken)?;
    match token.o == org {
        true => Ok(token),
        false => Err(StoreError::BadToken),
    }
}

pub(crate) fn encode_token(org: &str, key: &str) -> String {
    encode(&Token { o: org.to_string(), k: key.to_string(), n: None })
}

pub(crate) fn decode_token(org: &str, token: &str) -> StoreResult<String> {
    decode(org, token).map(|token| token.k)
}

/// The listing's total a token carries, if it was counted.
pub fn token_total(org: &str, token: &str) -> StoreResult<Option<u64>> {
    decode(org, token).map(|token| token.n)
}

/// `token` carrying the listing's total, so later pages need not count again.
pub fn with_total(org: &str, token: &str, total: u64) -> StoreResult<String> {
    decode(org, token).map(|token| encode(&Token { n: Some(total), ..token }))
}

/// A fleet job's sort key in its organisation's listing: creation time, then id.
pub(crate) fn fleet_sort_key(record: &FleetRecord) -> String {
    format!("{:013}#{}", record.fleet.created_at.millis().max(0), record.fleet.id)
}

/// A fleet job as stored: its not-started notes are kept apart (each added on its own).
fn fleet_json(record: &FleetRecord) -> String {
    let mut stored = record.clone();
    stored.fleet.status.not_started.clear();
    to_json(&stored)
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("store records serialise to JSON")
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Unavailable(format!("a stored item does not parse: {e}")))
}
