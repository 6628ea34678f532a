//! Role provisioning on PostgreSQL and MySQL/MariaDB: three login roles
//! (`<prefix>_ro`, `<prefix>_rw`, `<prefix>_ddl`) with grants in every database.

mod error;
pub mod mysql;
pub mod password;
pub mod postgres;
pub mod tls;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::request::Invalid;
pub use error::DbError;
pub use tls::{TlsConfig, TlsMode};

/// The engines dbroles provisions, as RDS names them.
pub const SUPPORTED_ENGINES: [&str; 5] = ["postgres", "aurora-postgresql", "mysql", "mariadb", "aurora-mysql"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Postgres,
    MySql,
}

impl Family {
    pub fn of(engine: &str) -> Option<Self> {
        match engine {
            "postgres" | "aurora-postgresql" => Some(Family::Postgres),
            "mysql" | "mariadb" | "aurora-mysql" => Some(Family::MySql),
            _ => None,
        }
    }

    /// The longest user name the engine accepts: PostgreSQL's NAMEDATALEN - 1; MySQL 5.7+
    /// and MariaDB's portable limit of 32 (MySQL before 5.7 allowed 16).
    pub fn max_user_len(self) -> usize {
        match self {
            Family::Postgres => 63,
            Family::MySql => 32,
        }
    }
}

/// The message for an engine dbroles cannot provision.
pub fn unsupported(engine: &str) -> String {
    format!("the engine '{engine}' is not supported; supported engines: {}", SUPPORTED_ENGINES.join(", "))
}

/// Checks that `<prefix>_ddl` (the longest name) fits the engine.
pub fn validate_prefix(prefix: &str, engine: &str) -> Result<Family, Invalid> {
    let family = Family::of(engine).ok_or_else(|| Invalid(unsupported(engine)))?;
    let longest = Level::Ddl.user(prefix);
    if longest.len() > family.max_user_len() {
        return Err(Invalid(format!(
            "the role prefix '{prefix}' makes the user '{longest}', longer than the {} characters {engine} allows",
            family.max_user_len()
        )));
    }
    Ok(family)
}

/// Checks a deployment's role prefix: a letter, then letters, digits or `_`.
pub fn validate_prefix_shape(prefix: &str) -> Result<(), String> {
    let ok = prefix.starts_with(|c: char| c.is_ascii_alphabetic())
        && prefix.len() <= 59
        && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!("role prefix '{prefix}': must start with a letter and hold at most 59 letters, digits or '_'"))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ro,
    Rw,
    Ddl,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Ro, Level::Rw, Level::Ddl];

    pub fn suffix(self) -> &'static str {
        match self {
            Level::Ro => "ro",
            Level::Rw => "rw",
            Level::Ddl => "ddl",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|level| level.suffix() == text)
    }

    pub fn user(self, prefix: &str) -> String {
        format!("{prefix}_{}", self.suffix())
    }
}

/// Where to connect and as whom.
#[derive(Clone, Debug)]
pub struct Target {
    pub family: Family,
    pub host: String,
    pub port: u16,
    pub master_user: String,
    pub master_password: SecretString,
    pub tls: TlsConfig,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    /// Databases provisioned at once.
    pub concurrency: usize,
}

impl Target {
    pub fn describe(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// A role and the password it is to have.
#[derive(Clone, Debug)]
pub struct RoleSpec {
    pub level: Level,
    pub user: String,
    pub password: SecretString,
}

impl RoleSpec {
    pub fn new(prefix: &str, level: Level) -> Self {
        Self { level, user: level.user(prefix), password: password::generate() }
    }
}

/// The outcome for one role: `Err` holds a message that names no secret.
#[derive(Clone, Debug, PartialEq)]
pub struct RoleOutcome {
    pub level: Level,
    pub user: String,
    pub result: Result<(), DbError>,
}

/// What a run did, for the job and the benchmark.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    pub outcomes: Vec<RoleOutcome>,
    pub databases: Vec<String>,
    pub connections: usize,
    pub statements: usize,
    pub round_trips: usize,
}

/// A failure of the whole run (nothing per role to report).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    #[error("could not connect to {target}: {source}")]
    Connect { target: String, source: DbError },
    #[error(transparent)]
    Failed(DbError),
}

impl EngineError {
    /// Whether the run may succeed if tried again (the instance failing over, say).
    pub fn is_transient(&self) -> bool {
        match self {
            EngineError::Connect { source, .. } | EngineError::Failed(source) => source.transient,
        }
    }
}

/// Counts connections, statements and round trips as they happen.
#[derive(Default, Debug)]
pub(crate) struct Counters {
    connections: AtomicUsize,
    statements: AtomicUsize,
    round_trips: AtomicUsize,
}

impl Counters {
    fn connection(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    fn sent(&self, statements: usize) {
        self.statements.fetch_add(statements, Ordering::Relaxed);
        self.round_trips.fetch_add(1, Ordering::Relaxed);
    }

    fn into_report(self: Arc<Self>, outcomes: Vec<RoleOutcome>, databases: Vec<String>) -> Report {
        Report {
            outcomes,
            databases,
            connections: self.connections.load(Ordering::Relaxed),
            statements: self.statements.load(Ordering::Relaxed),
            round_trips: self.round_trips.load(Ordering::Relaxed),
        }
    }
}

/// Creates or updates the roles and grants them in every database.
pub async fn provision(target: &Target, roles: &[RoleSpec]) -> Result<Report, EngineError> {
    match target.family {
        Family::Postgres => postgres::provision(target, roles).await,
        Family::MySql => mysql::provision(target, roles).await,
    }
}

/// Logs in as a role: proof that the password works.
pub async fn check_login(target: &Target, user: &str, password: &SecretString) -> Result<(), DbError> {
    match target.family {
        Family::Postgres => postgres::check_login(target, user, password).await,
        Family::MySql => mysql::check_login(target, user, password).await,
    }
}

/// Runs a future with a time limit, naming what timed out (which may pass: transient).
pub(crate) async fn limited<T>(
    limit: Duration,
    what: impl FnOnce() -> String,
    work: impl std::future::Future<Output = Result<T, DbError>>,
) -> Result<T, DbError> {
    match tokio::time::timeout(limit, work).await {
        Ok(result) => result,
        Err(_) => Err(DbError::transient(format!("{} timed out after {} s", what(), limit.as_secs_f32()))),
    }
}
