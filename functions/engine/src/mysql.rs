//! MySQL and MariaDB (`mysql`, `mariadb`, `aurora-mysql`).
//!
//! Users are created with `CREATE USER IF NOT EXISTS` and their password set with
//! `ALTER USER`, never dropped, so open sessions survive a rotation. A level's
//! second login (the alternating strategy) is a user with the same grants,
//! granted again on every run. Global
//! privileges other than USAGE are revoked first. Grants are per database on every
//! non-system schema, never `ON *.*`. The master needs what RDS gives it: the
//! application privileges WITH GRANT OPTION and CREATE USER, no SUPER or FILE.
//! MariaDB has no place to mark a user; the secret store's credentials are the mark.
//!
//! The statements work on MariaDB 10.4+ (`ACCOUNT LOCK`, which retiring a role
//! needs, came in 10.4; RDS offers none older) and MySQL 5.7+/8. Where they differ:
//! MySQL 8 has no portable way to send a pre-hashed password (its default
//! plugin, `caching_sha2_password`, takes only plaintext, and the
//! `mysql_native_password` hash form is gone in 8.4), so the password travels
//! in `IDENTIFIED BY` over the (TLS) connection; both servers redact it in their
//! logs. Passwords come from a fixed alphabet with no quote or backslash, and
//! are still escaped.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, SslOpts};
use secrecy::{ExposeSecret, SecretString};

use super::connections::{Connections, Slot};
use super::drift::{self, Change, Drift, Findings};
use super::{
    limited, DbError, EngineError, Escalation, Existing, Grants, Level, PerRole, Retirement, RoleSpec, Scope, Survey, Target,
    TlsMode,
};

/// Schemas that are never granted.
pub const SYSTEM_SCHEMAS: [&str; 5] = ["mysql", "sys", "performance_schema", "information_schema", "rdsadmin"];

/// Every session's `sql_mode`, whatever the server's default: dbroles' quoting
/// (backticks, `'` doubled, `\\` escaped) means the same under it.
/// `NO_BACKSLASH_ESCAPES` or `ANSI_QUOTES` in a parameter group would change
/// how a literal or an identifier is read.
const SESSION_SQL_MODE: &str = "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'";

/// `` `name` `` with backticks doubled.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A database name in a `GRANT ... ON db.*`: there `_` and `%` are wildcards and must be escaped.
pub fn quote_grant_db(name: &str) -> String {
    quote_ident(&grant_db(name))
}

/// A database name as the grant tables keep it: `_` and `%` escaped.
fn grant_db(name: &str) -> String {
    name.replace('\\', "\\\\").replace('_', "\\_").replace('%', "\\%")
}

pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

fn account(user: &str) -> String {
    format!("{}@'%'", quote_literal(user))
}

/// A connection, holding its slot among the session's until the server has closed it.
pub(crate) struct Connection {
    conn: Option<Conn>,
    slot: Option<Slot>,
    /// How long the server may take to close the session.
    closing: Duration,
}

impl Connection {
    /// Ends the session, then gives the slot back.
    async fn close(mut self) {
        if let Some(conn) = self.conn.take() {
            end(conn, self.closing).await;
        }
    }
}

impl Deref for Connection {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        self.conn.as_ref().expect("open until closed")
    }
}

impl DerefMut for Connection {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("open until closed")
    }
}

impl Drop for Connection {
    /// One left open (a failure returned early) is closed in the background, and keeps its slot until then.
    fn drop(&mut self) {
        let (Some(conn), Ok(runtime)) = (self.conn.take(), tokio::runtime::Handle::try_current()) else { return };
        let (slot, closing) = (self.slot.take(), self.closing);
        runtime.spawn(async move {
            end(conn, closing).await;
            drop(slot);
        });
    }
}

/// Ends a session, and returns once the server has closed its end of it.
///
/// The server answers nothing to a goodbye (`COM_QUIT`), so a client that says
/// one cannot tell when the server has let the session go, and the server
/// still counts it until then. So the session ends itself: the server closes
/// its end after `KILL CONNECTION_ID()`, and the ping that follows fails only
/// once it has. (The server lists the session, marked `Killed`, a moment
/// longer: it closes the socket before it forgets the thread.) A server that
/// refuses the kill answers the ping, and gets the goodbye.
async fn end(mut conn: Conn, closing: Duration) {
    let ended = async {
        let _ = conn.query_drop("KILL CONNECTION_ID()").await; // safe: the ping tells whether it took
        if conn.ping().await.is_ok() {
            let _ = conn.disconnect().await; // safe: a failed goodbye changes nothing
        }
    };
    let _ = tokio::time::timeout(closing, ended).await; // safe: a server that does not close in time is left to its timeout
}

/// Connects once fewer than the bound are open; the message names the host and user, never the password.
pub(crate) async fn connect(
    target: &Target,
    user: &str,
    password: &SecretString,
    connections: &Connections,
) -> Result<Connection, DbError> {
    let slot = connections.slot().await;
    let where_ = || format!("connecting to {}:{} as {user}", target.host, target.port);
    let mut opts = OptsBuilder::default()
        .ip_or_hostname(target.host.clone())
        .tcp_port(target.port)
        .user(Some(user))
        .pass(Some(password.expose_secret()))
        .prefer_socket(false)
        .wait_timeout(Some(target.statement_timeout.as_secs().max(1) as usize))
        .init(vec![SESSION_SQL_MODE]);
    match target.tls.mode {
        TlsMode::Disable => {}
        TlsMode::Require => opts = opts.ssl_opts(SslOpts::default().with_danger_accept_invalid_certs(true)),
        TlsMode::VerifyFull => {
            let mut ssl = SslOpts::default();
            if let Some(ca) = &target.tls.ca_file {
                ssl = ssl.with_root_certs(vec![ca.clone().into()]);
            }
            opts = opts.ssl_opts(ssl);
        }
    }
    let connect = async { Conn::new(opts).await.map_err(|e| DbError::from_mysql(&e).context(where_())) };
    let conn = limited(target.connect_timeout, where_, connect).await?;
    connections.opened();
    Ok(Connection { conn: Some(conn), slot: Some(slot), closing: target.connect_timeout })
}

async fn run(conn: &mut Conn, target: &Target, sql: &[String], connections: &Connections) -> Result<(), DbError> {
    connections.sent(sql.len());
    let batch = sql.join(";\n");
    limited(target.statement_timeout, || "a statement".to_string(), async {
        conn.query_drop(batch).await.map_err(|e| DbError::from_mysql(&e))
    })
    .await
}

/// The privileges of each level on a database. No level gets EXECUTE on a whole
/// database: a routine declared `SQL SECURITY DEFINER` runs with its definer's
/// rights (the master's, or an administrator's), so `rw` and `ddl` are granted
/// EXECUTE routine by routine, on `SQL SECURITY INVOKER` routines only ([`difference`]).
pub fn privileges(level: Level) -> &'static str {
    match level {
        Level::Ro => "SELECT, SHOW VIEW",
        Level::Rw => "SELECT, SHOW VIEW, INSERT, UPDATE, DELETE",
        Level::Ddl => "SELECT, SHOW VIEW, INSERT, UPDATE, DELETE, CREATE, ALTER, DROP, INDEX, REFERENCES, CREATE VIEW, TRIGGER",
    }
}

/// A stored routine of a database that runs with its caller's rights.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routine {
    pub database: String,
    pub name: String,
    /// `FUNCTION` or `PROCEDURE`.
    pub kind: String,
}

async fn master(target: &Target, connections: &Connections) -> Result<Connection, EngineError> {
    connect(target, &target.master_user, &target.master_password, connections)
        .await
        .map_err(|source| EngineError::Connect { target: target.describe(), source })
}

pub(crate) async fn survey(
    target: &Target,
    scope: &Scope,
    roles: &[RoleSpec],
    connections: &Connections,
) -> Result<Survey, EngineError> {
    let mut conn = master(target, connections).await?;
    let failed = |what: &str| {
        let context = format!("{what} on {}", target.describe());
        move |e: mysql_async::Error| EngineError::Failed(DbError::from_mysql(&e).context(&context))
    };
    connections.sent(1);
    let (databases, outside): (Vec<String>, Vec<String>) = conn
        .query::<String, _>("SELECT schema_name FROM information_schema.schemata ORDER BY schema_name")
        .await
        .map_err(failed("listing databases"))?
        .into_iter()
        .filter(|name| !SYSTEM_SCHEMAS.contains(&name.to_ascii_lowercase().as_str()))
        .partition(|name| scope.databases.covers(name));
    let logins: Vec<&str> = roles.iter().flat_map(RoleSpec::logins).collect();
    connections.sent(1);
    let found: Vec<String> = conn
        .exec(format!("SELECT user FROM mysql.user WHERE host = '%' AND user IN ({})", marks(logins.len())), logins.clone())
        .await
        .map_err(failed("reading users"))?;
    let grantees: Vec<String> = logins.iter().map(|login| account(login)).collect();
    connections.sent(1);
    let privileges: Vec<(String, String, String)> = conn
        .exec(
            format!(
                "SELECT grantee, privilege_type, is_grantable FROM information_schema.user_privileges WHERE grantee IN ({})",
                marks(logins.len())
            ),
            grantees,
        )
        .await
        .map_err(failed("reading global privileges"))?;
    conn.close().await;
    let existing = logins.iter().filter(|login| found.iter().any(|user| user == *login)).map(|login| {
        let grantee = account(login);
        let held: Vec<&(String, String, String)> = privileges.iter().filter(|(to, _, _)| *to == grantee).collect();
        let mut escalations: Vec<Escalation> =
            held.iter().map(|(_, privilege, _)| privilege).filter(|p| *p != "USAGE").cloned().map(Escalation::Global).collect();
        if held.iter().any(|(_, _, grantable)| grantable == "YES") {
            escalations.push(Escalation::Global("GRANT OPTION".into()));
        }
        Existing { user: login.to_string(), managed: None, escalations, owns_in: Vec::new() }
    });
    Ok(Survey { databases, outside, existing: existing.collect(), ..Survey::default() })
}

/// `?, ?, ?`: a placeholder per value of an `IN`.
/// (`NULL` for none: an `IN` that matches nothing.)
fn marks(count: usize) -> String {
    match count {
        0 => "NULL".to_string(),
        _ => vec!["?"; count].join(", "),
    }
}

pub(crate) async fn set_passwords(target: &Target, roles: &[RoleSpec], survey: &Survey, connections: &Connections) -> PerRole {
    let mut conn = master(target, connections).await?;
    let mut results = Vec::new();
    for role in roles {
        let sql: Vec<String> = role.present(survey).flat_map(|login| login_statements(role, login, survey)).collect();
        // No password to set and nothing to revoke: nothing to send.
        let result = if sql.is_empty() { Ok(()) } else { run(&mut conn, target, &sql, connections).await };
        results.push(result.map_err(|e| e.scrubbed(&[role.password.expose_secret()]).context(&role.user)));
    }
    conn.close().await;
    Ok(results)
}

/// One login of a level: what its level does not allow revoked, then the password if the run sets it.
fn login_statements(role: &RoleSpec, login: &str, survey: &Survey) -> Vec<String> {
    // Global privileges go first: if the master may not revoke one, the password stays as it was.
    let mut sql: Vec<String> = survey
        .existing(login)
        .into_iter()
        .flat_map(|existing| &existing.escalations)
        .map(|escalation| match escalation {
            Escalation::Global(privilege) => format!("REVOKE {privilege} ON *.* FROM {}", account(login)),
            other => unreachable!("MySQL has no {other}"),
        })
        .collect();
    if role.sets(login) {
        let password = quote_literal(role.password.expose_secret());
        sql.push(format!("CREATE USER IF NOT EXISTS {} IDENTIFIED BY {password}", account(login)));
        sql.push(format!("ALTER USER {} IDENTIFIED BY {password}", account(login)));
    }
    sql
}

pub(crate) async fn grant(target: &Target, roles: &[RoleSpec], survey: &Survey, connections: &Connections) -> Vec<Grants> {
    let failed_all = |error: DbError| Grants::failed_for_each(roles, error);
    let mut conn = match master(target, connections).await {
        Ok(conn) => conn,
        Err(error) => return failed_all(DbError { message: error.to_string(), transient: error.is_transient() }),
    };
    // Only the difference: on a server where nothing changed, nothing.
    let work = match statements(&mut conn, roles, survey, connections).await {
        Ok(work) => work,
        Err(error) => return failed_all(error),
    };
    let mut failed: Vec<Vec<DbError>> = roles.iter().map(|_| Vec::new()).collect();
    // Every role's statements in one round trip. If one fails, those before it
    // are done: what is still to do is read again and sent a statement at a time,
    // to name those that fail.
    let all = work.concat();
    if !all.is_empty() && run(&mut conn, target, &all, connections).await.is_err() {
        match statements(&mut conn, roles, survey, connections).await {
            Ok(rest) => {
                for (sql, failed) in rest.iter().zip(&mut failed) {
                    for statement in sql {
                        if let Err(error) = run(&mut conn, target, std::slice::from_ref(statement), connections).await {
                            failed.push(error.context(statement));
                        }
                    }
                }
            }
            Err(error) => failed.iter_mut().for_each(|failed| failed.push(error.clone())),
        }
    }
    conn.close().await;
    failed.into_iter().map(|failed| Grants { failed, skipped: survey.skipped.clone(), ..Grants::default() }).collect()
}

/// Each role's REVOKEs and GRANTs: both logins of a level get the same grants,
/// every run, so none is missing one the other has.
async fn statements(
    conn: &mut Conn,
    roles: &[RoleSpec],
    survey: &Survey,
    connections: &Connections,
) -> Result<Vec<Vec<String>>, DbError> {
    let logins: Vec<&str> = roles.iter().flat_map(|role| role.present(survey)).collect();
    let (routines, held) = read(conn, survey, &logins, connections).await?;
    let of = |login: &str| held.get(login).map(Vec::as_slice).unwrap_or_default();
    let work = roles.iter().map(|role| {
        let differences = role.present(survey).map(|login| difference(role, login, survey, &routines, of(login)));
        differences.flat_map(|difference| difference.revokes.into_iter().chain(difference.grants)).collect()
    });
    Ok(work.collect())
}

/// What a run and a plan read: the `SQL SECURITY INVOKER` routines of the
/// survey's databases, and what each of `logins` holds.
async fn read(
    conn: &mut Conn,
    survey: &Survey,
    logins: &[&str],
    connections: &Connections,
) -> Result<(Vec<Routine>, HashMap<String, Vec<Held>>), DbError> {
    let routines = invoker_routines(conn, survey, connections).await.map_err(|e| e.context("listing routines"))?;
    let held = held(conn, logins, connections).await.map_err(|e| e.context("reading privileges"))?;
    Ok((routines, held))
}

/// What a run would change on each role, from the same reads a run makes. Changes nothing.
pub(crate) async fn plan(target: &Target, roles: &[RoleSpec], survey: &Survey, connections: &Connections) -> Vec<Drift> {
    let mut found: Vec<Findings> = roles.iter().map(|role| drift::role_changes(role, survey)).collect();
    // A login the run creates holds nothing yet: all of its level is to grant.
    let per_role: Vec<Vec<&str>> = roles
        .iter()
        .map(|role| role.logins().filter(|login| *login == role.user || survey.existing(login).is_some()).collect())
        .collect();
    let logins: Vec<&str> = per_role.concat();
    let reads = async {
        let mut conn = master(target, connections).await.map_err(|error| error.to_string())?;
        let read = read(&mut conn, survey, &logins, connections).await.map_err(|error| error.message)?;
        conn.close().await;
        Ok::<_, String>(read)
    };
    match reads.await {
        Ok((routines, held)) => {
            for ((role, logins), found) in roles.iter().zip(&per_role).zip(&mut found) {
                for login in logins {
                    let held = held.get(*login).map(Vec::as_slice).unwrap_or_default();
                    found.add(difference(role, login, survey, &routines, held).findings);
                }
            }
        }
        Err(why) => found.iter_mut().for_each(|found| found.failed.push(why.clone())),
    }
    found.into_iter().map(Findings::into_drift).collect()
}

/// The `SQL SECURITY INVOKER` routines of the survey's databases.
async fn invoker_routines(conn: &mut Conn, survey: &Survey, connections: &Connections) -> Result<Vec<Routine>, DbError> {
    connections.sent(1);
    let rows: Vec<(String, String, String)> = conn
        .query(
            "SELECT routine_schema, routine_name, routine_type FROM information_schema.routines \
             WHERE security_type = 'INVOKER' ORDER BY 1, 2",
        )
        .await
        .map_err(|e| DbError::from_mysql(&e))?;
    Ok(rows
        .into_iter()
        .filter(|(database, _, _)| survey.databases.contains(database))
        .map(|(database, name, kind)| Routine { database, name, kind })
        .collect())
}

/// What a privilege is held on, as the grant tables name it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum On {
    /// A database, or a pattern of databases (`_` and `%` escaped where they are not wildcards).
    Database(String),
    Table {
        db: String,
        table: String,
    },
    Column {
        db: String,
        table: String,
        column: String,
    },
    Routine {
        db: String,
        kind: String,
        name: String,
    },
}

impl On {
    /// The database's name, wildcards unescaped (a pattern stays a pattern).
    fn database(&self) -> String {
        match self {
            On::Database(escaped) => escaped.replace("\\_", "_").replace("\\%", "%").replace("\\\\", "\\"),
            On::Table { db, .. } | On::Column { db, .. } | On::Routine { db, .. } => db.clone(),
        }
    }

    fn describe(&self) -> String {
        match self {
            On::Database(_) => format!("database {}", self.database()),
            On::Table { db, table } => format!("table {db}.{table}"),
            On::Column { db, table, column } => format!("column {column} of table {db}.{table}"),
            On::Routine { db, kind, name } => format!("{} {db}.{name}", kind.to_lowercase()),
        }
    }

    /// The `ON` of a `REVOKE`, with the column list where there is one.
    fn sql(&self, privilege: &str) -> String {
        match self {
            On::Database(escaped) => format!("{privilege} ON {}.*", quote_ident(escaped)),
            On::Table { db, table } => format!("{privilege} ON {}.{}", quote_ident(db), quote_ident(table)),
            On::Column { db, table, column } => {
                format!("{privilege} ({}) ON {}.{}", quote_ident(column), quote_ident(db), quote_ident(table))
            }
            On::Routine { db, kind, name } => format!("{privilege} ON {kind} {}.{}", quote_ident(db), quote_ident(name)),
        }
    }
}

/// One privilege a login holds.
struct Held {
    on: On,
    privilege: String,
    grant_option: bool,
}

/// What each of `logins` holds below the global level: on databases, tables,
/// columns and routines. Two queries, whatever the number of logins.
async fn held(conn: &mut Conn, logins: &[&str], connections: &Connections) -> Result<HashMap<String, Vec<Held>>, DbError> {
    let mysql = |e: mysql_async::Error| DbError::from_mysql(&e);
    let grantees: Vec<String> = logins.iter().map(|login| account(login)).collect();
    let login_of: HashMap<&str, &str> = grantees.iter().map(String::as_str).zip(logins.iter().copied()).collect();
    let marks = marks(logins.len());
    connections.sent(1);
    let rows: Vec<(String, String, String, String, String, String, String)> = conn
        .exec(
            format!(
                "SELECT grantee, 'database', table_schema, '', '', privilege_type, is_grantable \
                 FROM information_schema.schema_privileges WHERE grantee IN ({marks}) \
                 UNION ALL SELECT grantee, 'table', table_schema, table_name, '', privilege_type, is_grantable \
                 FROM information_schema.table_privileges WHERE grantee IN ({marks}) \
                 UNION ALL SELECT grantee, 'column', table_schema, table_name, column_name, privilege_type, is_grantable \
                 FROM information_schema.column_privileges WHERE grantee IN ({marks})"
            ),
            [grantees.as_slice(); 3].concat(),
        )
        .await
        .map_err(mysql)?;
    let mut held: HashMap<String, Vec<Held>> = HashMap::new();
    for (grantee, kind, db, table, column, privilege, grantable) in rows {
        let Some(login) = login_of.get(grantee.as_str()) else { continue };
        let on = match kind.as_str() {
            "database" => On::Database(db),
            "table" => On::Table { db, table },
            _ => On::Column { db, table, column },
        };
        held.entry(login.to_string()).or_default().push(Held { on, privilege, grant_option: grantable == "YES" });
    }
    connections.sent(1);
    let routines: Vec<(String, String, String, String, String)> = conn
        .exec(
            format!("SELECT user, db, routine_name, routine_type, proc_priv FROM mysql.procs_priv WHERE host = '%' AND user IN ({marks})"),
            logins.to_vec(),
        )
        .await
        .map_err(mysql)?;
    for (login, db, name, kind, privileges) in routines {
        let on = On::Routine { db, kind, name };
        let grant_option = privileges.split(',').any(|p| p == "Grant");
        let each = privileges.split(',').filter(|p| !p.is_empty() && *p != "Grant").map(|p| p.to_uppercase());
        held.entry(login).or_default().extend(each.map(|privilege| Held { on: on.clone(), privilege, grant_option }));
    }
    Ok(held)
}

/// One login's difference: what a plan lists, and the REVOKEs and GRANTs a run sends.
struct Difference {
    findings: Findings,
    revokes: Vec<String>,
    grants: Vec<String>,
}

/// What `login` holds beyond its level, and what of its level it lacks: each
/// privilege of the level on every database of the scope, EXECUTE on each of
/// their `SQL SECURITY INVOKER` routines (`rw`, `ddl`). Nothing outside the
/// scope, no grant option, no routine of another kind.
fn difference(role: &RoleSpec, login: &str, survey: &Survey, routines: &[Routine], held: &[Held]) -> Difference {
    let level: Vec<&str> = privileges(role.level).split(", ").collect();
    let to = if login == role.user { String::new() } else { format!(" to {login}") };
    let in_scope = |on: &On| survey.databases.contains(&on.database());
    let invoker = |on: &On| match on {
        On::Routine { db, kind, name } => {
            routines.iter().any(|r| r.database == *db && r.name == *name && r.kind == *kind) && role.level != Level::Ro
        }
        _ => false,
    };
    let mut findings = Findings::default();
    let mut revokes = Vec::new();
    for h in held {
        let allowed = match &h.on {
            On::Routine { .. } => h.privilege == "EXECUTE" && invoker(&h.on),
            _ => level.contains(&h.privilege.as_str()),
        };
        let why = match (in_scope(&h.on), allowed) {
            (false, _) => "outside the scope".to_string(),
            (true, false) => format!("not in level {}", role.level.suffix()),
            (true, true) => continue,
        };
        findings.changes.push(Change::revoke(&h.privilege, &format!("{}{to}", h.on.describe()), &why));
        revokes.push(format!("REVOKE {} FROM {}", h.on.sql(&h.privilege), account(login)));
    }
    // A grant option is held on an object, whatever the privileges listed with it: one REVOKE each.
    let mut optioned: Vec<&On> = Vec::new();
    for on in held.iter().filter(|h| h.grant_option).map(|h| &h.on) {
        if !optioned.contains(&on) {
            optioned.push(on);
        }
    }
    for on in optioned {
        let why = "a grant option is never part of a level";
        findings.changes.push(Change::revoke("GRANT OPTION", &format!("{}{to}", on.describe()), why));
        revokes.push(format!("REVOKE {} FROM {}", on.sql("GRANT OPTION"), account(login)));
    }
    let has = |on: &On, privilege: &str| held.iter().any(|h| h.on == *on && h.privilege == privilege);
    let mut grants = Vec::new();
    for db in &survey.databases {
        let on = On::Database(grant_db(db));
        let missing: Vec<&str> = level.iter().copied().filter(|p| !has(&on, p)).collect();
        if !missing.is_empty() {
            grants.push(format!("GRANT {} ON {}.* TO {}", missing.join(", "), quote_grant_db(db), account(login)));
        }
        findings.changes.extend(missing.iter().map(|p| Change::grant(p, &format!("database {db}{to}"))));
    }
    for routine in routines.iter().filter(|_| role.level != Level::Ro) {
        let on = On::Routine { db: routine.database.clone(), kind: routine.kind.clone(), name: routine.name.clone() };
        if !has(&on, "EXECUTE") {
            grants.push(format!("GRANT {} TO {}", on.sql("EXECUTE"), account(login)));
            findings.changes.push(Change::grant("EXECUTE", &format!("{}{to}", on.describe())));
        }
    }
    Difference { findings, revokes, grants }
}

/// Retires the roles' logins: each account locked (no new login), its sessions
/// ended (`mysql.rds_kill` on RDS, where the master has no SUPER; `KILL`
/// elsewhere), then dropped, unless it is the DEFINER of a view, routine,
/// trigger or event. MariaDB would drop it and orphan them (a view then fails
/// with error 1449), MySQL 8.0.22+ refuses: such a login stays locked, and the
/// objects are named for an administrator to give another definer.
pub(crate) async fn revoke(target: &Target, roles: &[RoleSpec], survey: &Survey, connections: &Connections) -> Vec<Retirement> {
    let mut conn = match master(target, connections).await {
        Ok(conn) => conn,
        Err(error) => return Retirement::stopped_for_each(roles, error.to_string()),
    };
    let mut retirements = Vec::new();
    for role in roles {
        let mut retirement = Retirement::default();
        for login in role.found(survey) {
            if let Err(error) = retire(&mut conn, target, login, &mut retirement, connections).await {
                retirement.remains.push(format!("{login} ({})", error.message));
            }
        }
        retirements.push(retirement);
    }
    conn.close().await;
    retirements
}

async fn retire(
    conn: &mut Conn,
    target: &Target,
    login: &str,
    retirement: &mut Retirement,
    connections: &Connections,
) -> Result<(), DbError> {
    let mysql = |e: mysql_async::Error| DbError::from_mysql(&e);
    run(conn, target, &[format!("ALTER USER {} ACCOUNT LOCK", account(login))], connections).await?;
    connections.sent(1);
    let sessions: Vec<u64> =
        conn.exec("SELECT id FROM information_schema.processlist WHERE user = ?", (login,)).await.map_err(mysql)?;
    for id in sessions {
        connections.sent(1);
        let killed = match conn.exec_drop("CALL mysql.rds_kill(?)", (id,)).await {
            // ER_SP_DOES_NOT_EXIST: not RDS; a master with SUPER or CONNECTION ADMIN may KILL.
            Err(mysql_async::Error::Server(error)) if error.code == 1305 => {
                conn.query_drop(format!("KILL CONNECTION {id}")).await
            }
            other => other,
        };
        match killed {
            Ok(()) => retirement.sessions_ended += 1,
            // ER_NO_SUCH_THREAD: it ended on its own.
            Err(mysql_async::Error::Server(error)) if error.code == 1094 => {}
            Err(error) => retirement.remains.push(format!("session {id} of {login} ({})", mysql(error).message)),
        }
    }
    let definer = format!("{login}@%");
    connections.sent(1);
    let defined: Vec<(String, String, String)> = conn
        .exec(
            "SELECT 'view', table_schema, table_name FROM information_schema.views WHERE definer = ? \
             UNION ALL SELECT lower(routine_type), routine_schema, routine_name FROM information_schema.routines WHERE definer = ? \
             UNION ALL SELECT 'trigger', trigger_schema, trigger_name FROM information_schema.triggers WHERE definer = ? \
             UNION ALL SELECT 'event', event_schema, event_name FROM information_schema.events WHERE definer = ?",
            (&definer, &definer, &definer, &definer),
        )
        .await
        .map_err(mysql)?;
    if !defined.is_empty() {
        let objects: Vec<String> = defined.iter().map(|(kind, db, name)| format!("{kind} {db}.{name}")).collect();
        retirement.remains.push(format!(
            "{login} is the DEFINER of {}: it stays locked, not dropped, so they are not orphaned; give them another definer, then revoke again",
            objects.join(", ")
        ));
        return Ok(());
    }
    if retirement.remains.is_empty() {
        run(conn, target, &[format!("DROP USER {}", account(login))], connections).await?;
    }
    Ok(())
}

pub(crate) async fn check_login(
    target: &Target,
    user: &str,
    password: &SecretString,
    connections: &Connections,
) -> Result<(), DbError> {
    let mut conn = connect(target, user, password, connections).await?;
    conn.query_drop("SELECT 1").await.map_err(|e| DbError::from_mysql(&e))?;
    conn.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_database_names_escape_wildcards() {
        assert_eq!(quote_grant_db("my_db"), r"`my\_db`");
        assert_eq!(quote_grant_db("a`b%"), r"`a``b\%`");
        assert_eq!(account("p_ro"), "'p_ro'@'%'");
    }
}
