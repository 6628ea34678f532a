//! dbroles' role engine: least-privilege login roles on PostgreSQL and
//! MySQL/MariaDB, three per server (`<prefix>_ro`, `<prefix>_rw`,
//! `<prefix>_ddl`) with grants in every database, as a master RDS gives (no
//! superuser) may make them. It needs no AWS: the orchestration (stores,
//! workflow, API) is `dbroles-core`'s, which re-exports this crate as `engine`.
//!
//! | module | owns |
//! | --- | --- |
//! | [`postgres`], [`mysql`] | each engine's survey, passwords and grants, and the statements they send |
//! | [`tls`] | how connections verify the server (the RDS CA bundle built in) |
//! | [`password`] | generated passwords |
//! | this file | levels, targets, a run's [`Session`], and what a run reports |

mod connections;
mod drift;
mod error;
pub mod mysql;
pub mod password;
pub mod postgres;
pub mod scope;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use connections::Connections;
pub use drift::Drift;
pub use error::DbError;
pub use scope::{glob, Globs, Scope};

/// Input that cannot be accepted; the message names the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);
pub use tls::{TlsConfig, TlsError, TlsMode};

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

    /// The longest user name the engine accepts: PostgreSQL's NAMEDATALEN - 1
    /// (bytes); MySQL's 32 characters since 5.7.8, which MariaDB (80 and more)
    /// is held to as well, so a user name moves between the two.
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

/// Checks that the longest name the prefix makes fits the engine: `<prefix>_ddl`,
/// or `<prefix>_ddl_alt` when each level has two logins (`alternating`).
pub fn validate_prefix(prefix: &str, engine: &str, alternating: bool) -> Result<Family, Invalid> {
    let family = Family::of(engine).ok_or_else(|| Invalid(unsupported(engine)))?;
    let limit = family.max_user_len();
    let longest = if alternating { Level::Ddl.alternate(prefix) } else { Level::Ddl.user(prefix) };
    if longest.len() > limit {
        return Err(Invalid(format!(
            "the role prefix '{prefix}' makes the user '{longest}', longer than the {limit} characters {engine} allows"
        )));
    }
    Ok(family)
}

/// Checks a deployment's role prefix: a letter, then letters, digits or `_`.
pub fn validate_prefix_shape(prefix: &str) -> Result<(), Invalid> {
    let ok = prefix.starts_with(|c: char| c.is_ascii_alphabetic())
        && prefix.len() <= 59
        && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Invalid(format!("role prefix '{prefix}': must start with a letter and hold at most 59 letters, digits or '_'")))
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

    /// The level's role: it holds the level's privileges, and logs in.
    pub fn user(self, prefix: &str) -> String {
        format!("{prefix}_{}", self.suffix())
    }

    /// The level's second login under the alternating strategy.
    pub fn alternate(self, prefix: &str) -> String {
        format!("{prefix}_{}_alt", self.suffix())
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
    /// The most connections open to the server at once, the login checks'
    /// included (`max_db_connections`): also how many databases are provisioned at once.
    pub max_connections: usize,
}

impl Target {
    pub fn describe(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// A level's role, its logins, and the password a run sets on one of them.
///
/// With one login (the single strategy) the role logs in itself. With two
/// (alternating), a second login belongs to the role: on PostgreSQL a member
/// that inherits it and whose sessions run as it, on MySQL/MariaDB a user with
/// the same grants. A run sets a password on one login only, so the other's
/// keeps working.
#[derive(Clone, Debug)]
pub struct RoleSpec {
    pub level: Level,
    /// The level's role: it holds the grants, and logs in.
    pub user: String,
    /// The login that gets `password`; `None` leaves every password as it is.
    pub login: Option<String>,
    pub password: SecretString,
    /// The level's second login, under the alternating strategy.
    pub alternate: Option<String>,
}

impl RoleSpec {
    /// The level's role, getting a new password.
    pub fn new(prefix: &str, level: Level) -> Self {
        let user = level.user(prefix);
        Self { level, login: Some(user.clone()), user, password: password::generate(), alternate: None }
    }

    /// The same level with a second login.
    pub fn alternating(self, prefix: &str) -> Self {
        Self { alternate: Some(self.level.alternate(prefix)), ..self }
    }

    /// The level's logins: its role, and the second login if it has one.
    pub fn logins(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.user.as_str()).chain(self.alternate.as_deref())
    }

    /// Whether this run sets `login`'s password.
    pub fn sets(&self, login: &str) -> bool {
        self.login.as_deref() == Some(login)
    }

    /// The logins that exist before the run.
    pub fn found<'a>(&'a self, survey: &'a Survey) -> impl Iterator<Item = &'a str> {
        self.logins().filter(|login| survey.existing(login).is_some())
    }

    /// The logins that exist once the run has set its password: those found, and the one it creates.
    pub fn present<'a>(&'a self, survey: &'a Survey) -> impl Iterator<Item = &'a str> {
        self.logins().filter(|login| self.sets(login) || survey.existing(login).is_some())
    }
}

/// What a run found before it changed anything.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Survey {
    /// The databases to grant in (those of the scope).
    pub databases: Vec<String>,
    /// Databases outside the scope the master may enter: what the roles hold there is withdrawn.
    pub outside: Vec<String>,
    /// Databases left out, and why (the master may not enter them, say).
    pub skipped: Vec<String>,
    /// The roles that exist already.
    pub existing: Vec<Existing>,
    /// The master may change what only a superuser may (SUPERUSER, REPLICATION, BYPASSRLS).
    pub master_is_superuser: bool,
    /// Databases whose CONNECT the master may grant (PostgreSQL).
    pub grant_connect: Vec<String>,
}

impl Survey {
    pub fn existing(&self, user: &str) -> Option<&Existing> {
        self.existing.iter().find(|existing| existing.user == user)
    }
}

/// A role that exists before the run.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Existing {
    pub user: String,
    /// Marked as dbroles' own; `None` where the engine has no place for a mark (MySQL, MariaDB).
    pub managed: Option<bool>,
    /// What its level does not allow: attributes, memberships, global privileges.
    pub escalations: Vec<Escalation>,
    /// The databases it owns objects in (PostgreSQL): for a second login, what
    /// it made after leaving its level's role, which each run gives the role.
    pub owns_in: Vec<String>,
}

/// Something a role has beyond its level, which every run removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Escalation {
    /// A PostgreSQL attribute (`SUPERUSER`, `CREATEROLE`, ...) or `VALID UNTIL`.
    Attribute(&'static str),
    /// Membership of another PostgreSQL role.
    MemberOf(String),
    /// A MySQL/MariaDB global privilege (`SUPER`, `FILE`, ...).
    Global(String),
}

impl Escalation {
    /// Only a superuser may remove it (PostgreSQL 15 refuses even `NOSUPERUSER` to others).
    pub fn needs_superuser(&self) -> bool {
        matches!(self, Escalation::Attribute("SUPERUSER" | "REPLICATION" | "BYPASSRLS"))
    }
}

impl std::fmt::Display for Escalation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Escalation::Attribute(name) => write!(f, "{name}"),
            Escalation::MemberOf(role) => write!(f, "membership of {role}"),
            Escalation::Global(privilege) => write!(f, "the global privilege {privilege}"),
        }
    }
}

/// One role's grants: where a grant failed, and what the master could not grant.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Grants {
    pub failed: Vec<DbError>,
    pub skipped: Vec<String>,
    /// What it holds beyond its level that the master may not revoke (see [`Drift::not_revocable`]).
    pub not_revocable: Vec<String>,
}

impl Grants {
    /// Every role's, when one failure stopped them all.
    pub(crate) fn failed_for_each(roles: &[RoleSpec], error: DbError) -> Vec<Grants> {
        roles.iter().map(|_| Grants { failed: vec![error.clone()], ..Grants::default() }).collect()
    }
}

/// What retiring one level's logins did, and what is left of them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Retirement {
    /// Sessions of its logins that were ended.
    pub sessions_ended: usize,
    /// What keeps it from being gone (empty: every login is dropped).
    pub remains: Vec<String>,
}

impl Retirement {
    /// Every role's, when one failure stopped them all: nothing was retired.
    pub(crate) fn stopped_for_each(roles: &[RoleSpec], why: String) -> Vec<Retirement> {
        roles.iter().map(|_| Retirement { remains: vec![why.clone()], ..Retirement::default() }).collect()
    }
}

/// What a run did, for the benchmark.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    pub databases: Vec<String>,
    pub connections: usize,
    pub statements: usize,
    pub round_trips: usize,
}

/// One result per role, or a failure of the whole step.
pub type PerRole = Result<Vec<Result<(), DbError>>, EngineError>;

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

/// One provisioning run on a server, in three steps: a survey that changes
/// nothing, the roles and their passwords, then the grants. The credentials are
/// promoted between the second and the third, as soon as the passwords log in.
pub struct Session {
    target: Target,
    scope: Scope,
    connections: Arc<Connections>,
}

impl Session {
    /// A run over every database and schema.
    pub fn new(target: &Target) -> Self {
        Self::scoped(target, Scope::default())
    }

    /// A run that grants within `scope`, and withdraws outside it.
    pub fn scoped(target: &Target, scope: Scope) -> Self {
        let connections = Arc::new(Connections::new(target.max_connections));
        Self { target: target.clone(), scope, connections }
    }

    /// The databases, the roles that exist, and what the master may do; changes nothing.
    pub async fn survey(&self, roles: &[RoleSpec]) -> Result<Survey, EngineError> {
        match self.target.family {
            Family::Postgres => postgres::survey(&self.target, &self.scope, roles, &self.connections).await,
            Family::MySql => mysql::survey(&self.target, &self.scope, roles, &self.connections).await,
        }
    }

    /// Creates or updates each role with its new password, removing what its level
    /// does not allow: one result per role.
    pub async fn set_passwords(&self, roles: &[RoleSpec], survey: &Survey) -> PerRole {
        match self.target.family {
            Family::Postgres => postgres::set_passwords(&self.target, roles, survey, &self.connections).await,
            Family::MySql => mysql::set_passwords(&self.target, roles, survey, &self.connections).await,
        }
    }

    /// Grants each role its level in every database of the survey, and withdraws
    /// what it holds outside the scope: one result per role.
    pub async fn grant(&self, roles: &[RoleSpec], survey: &Survey) -> Vec<Grants> {
        match self.target.family {
            Family::Postgres => postgres::grant(&self.target, &self.scope, roles, survey, &self.connections).await,
            Family::MySql => mysql::grant(&self.target, roles, survey, &self.connections).await,
        }
    }

    /// What a run would change on each role, and what the master may not change:
    /// one result per role. Changes nothing.
    pub async fn plan(&self, roles: &[RoleSpec], survey: &Survey) -> Vec<Drift> {
        match self.target.family {
            Family::Postgres => postgres::plan(&self.target, &self.scope, roles, survey, &self.connections).await,
            Family::MySql => mysql::plan(&self.target, roles, survey, &self.connections).await,
        }
    }

    /// Retires each level's logins that exist: no new login, its sessions ended,
    /// what it owns given to the master, what it holds revoked, then dropped.
    /// One result per role.
    pub async fn revoke(&self, roles: &[RoleSpec], survey: &Survey) -> Vec<Retirement> {
        match self.target.family {
            Family::Postgres => postgres::revoke(&self.target, roles, survey, &self.connections).await,
            Family::MySql => mysql::revoke(&self.target, roles, survey, &self.connections).await,
        }
    }

    /// Logs in as a role: proof that the password works.
    pub async fn check_login(&self, user: &str, password: &SecretString) -> Result<(), DbError> {
        login(&self.target, user, password, &self.connections).await
    }

    /// Connections, statements and round trips so far.
    pub fn report(&self, survey: &Survey) -> Report {
        self.connections.report(survey.databases.clone())
    }
}

/// Logs in as a role: proof that the password works. One connection, outside any session.
pub async fn check_login(target: &Target, user: &str, password: &SecretString) -> Result<(), DbError> {
    login(target, user, password, &Connections::new(1)).await
}

async fn login(target: &Target, user: &str, password: &SecretString, connections: &Connections) -> Result<(), DbError> {
    match target.family {
        Family::Postgres => postgres::check_login(target, user, password, connections).await,
        Family::MySql => mysql::check_login(target, user, password, connections).await,
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
