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

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, SslOpts};
use secrecy::{ExposeSecret, SecretString};

use super::drift::{self, Change, Drift, Findings};
use super::{
    limited, Counters, DbError, EngineError, Escalation, Existing, Grants, Level, PerRole, Retirement, RoleSpec, Scope, Survey,
    Target, TlsMode,
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

pub(crate) async fn connect(target: &Target, user: &str, password: &SecretString) -> Result<Conn, DbError> {
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
    limited(target.connect_timeout, where_, connect).await
}

async fn run(conn: &mut Conn, target: &Target, sql: &[String], counters: &Counters) -> Result<(), DbError> {
    counters.sent(sql.len());
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

async fn master(target: &Target, counters: &Counters) -> Result<Conn, EngineError> {
    let conn = connect(target, &target.master_user, &target.master_password)
        .await
        .map_err(|source| EngineError::Connect { target: target.describe(), source })?;
    counters.connection();
    Ok(conn)
}

pub(crate) async fn survey(
    target: &Target,
    scope: &Scope,
    roles: &[RoleSpec],
    counters: &Counters,
) -> Result<Survey, EngineError> {
    let mut conn = master(target, counters).await?;
    let failed = |what: &str| {
        let context = format!("{what} on {}", target.describe());
        move |e: mysql_async::Error| EngineError::Failed(DbError::from_mysql(&e).context(&context))
    };
    let (databases, outside): (Vec<String>, Vec<String>) = conn
        .query::<String, _>("SELECT schema_name FROM information_schema.schemata ORDER BY schema_name")
        .await
        .map_err(failed("listing databases"))?
        .into_iter()
        .filter(|name| !SYSTEM_SCHEMAS.contains(&name.to_ascii_lowercase().as_str()))
        .partition(|name| scope.databases.covers(name));
    let mut existing = Vec::new();
    let logins: Vec<&str> = roles.iter().flat_map(RoleSpec::logins).collect();
    for login in &logins {
        let found: Option<String> = conn
            .exec_first("SELECT user FROM mysql.user WHERE user = ? AND host = '%'", (login,))
            .await
            .map_err(failed("reading users"))?;
        if found.is_none() {
            continue;
        }
        let privileges: Vec<(String, String)> = conn
            .exec(
                "SELECT privilege_type, is_grantable FROM information_schema.user_privileges WHERE grantee = ?",
                (account(login),),
            )
            .await
            .map_err(failed("reading global privileges"))?;
        let grantable = privileges.iter().any(|(_, grantable)| grantable == "YES");
        let mut escalations: Vec<Escalation> =
            privileges.into_iter().map(|(privilege, _)| privilege).filter(|p| p != "USAGE").map(Escalation::Global).collect();
        if grantable {
            escalations.push(Escalation::Global("GRANT OPTION".into()));
        }
        existing.push(Existing { user: login.to_string(), managed: None, escalations, owns_in: Vec::new() });
    }
    counters.sent(1 + 2 * logins.len());
    let _ = conn.disconnect().await; // safe: nothing was changed
    Ok(Survey { databases, outside, existing, ..Survey::default() })
}

pub(crate) async fn set_passwords(target: &Target, roles: &[RoleSpec], survey: &Survey, counters: &Counters) -> PerRole {
    let mut conn = master(target, counters).await?;
    let mut results = Vec::new();
    for role in roles {
        let sql: Vec<String> = role.present(survey).flat_map(|login| login_statements(role, login, survey)).collect();
        // No password to set and nothing to revoke: nothing to send.
        let result = if sql.is_empty() { Ok(()) } else { run(&mut conn, target, &sql, counters).await };
        results.push(result.map_err(|e| e.scrubbed(&[role.password.expose_secret()]).context(&role.user)));
    }
    let _ = conn.disconnect().await; // safe: the work is committed; a failed goodbye changes nothing
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

pub(crate) async fn grant(target: &Target, roles: &[RoleSpec], survey: &Survey, counters: &Counters) -> Vec<Grants> {
    let failed_all = |error: DbError| Grants::failed_for_each(roles, error);
    let mut conn = match master(target, counters).await {
        Ok(conn) => conn,
        Err(error) => return failed_all(DbError { message: error.to_string(), transient: error.is_transient() }),
    };
    let routines = match invoker_routines(&mut conn, survey, counters).await {
        Ok(routines) => routines,
        Err(error) => return failed_all(error.context("listing routines")),
    };
    let mut grants = Vec::new();
    for role in roles {
        // Both logins of a level get the same grants, every run: none is missing one the other has.
        let mut sql = Vec::new();
        let mut unread = None;
        for login in role.present(survey) {
            match held(&mut conn, login, counters).await {
                // Only the difference: on a server where nothing changed, nothing.
                Ok(held) => {
                    let difference = difference(role, login, survey, &routines, &held);
                    sql.extend(difference.revokes);
                    sql.extend(difference.grants);
                }
                Err(error) => unread = Some(error.context("reading privileges")),
            }
        }
        if let Some(error) = unread {
            grants.push(Grants { failed: vec![error], skipped: survey.skipped.clone(), ..Grants::default() });
            continue;
        }
        let mut failed = Vec::new();
        // One round trip per role; if it fails, each statement on its own, to name those that fail.
        if run(&mut conn, target, &sql, counters).await.is_err() {
            for statement in &sql {
                if let Err(error) = run(&mut conn, target, std::slice::from_ref(statement), counters).await {
                    failed.push(error.context(statement));
                }
            }
        }
        grants.push(Grants { failed, skipped: survey.skipped.clone(), ..Grants::default() });
    }
    let _ = conn.disconnect().await; // safe: the work is committed; a failed goodbye changes nothing
    grants
}

/// What a run would change on each role, from the same reads a run makes. Changes nothing.
pub(crate) async fn plan(target: &Target, roles: &[RoleSpec], survey: &Survey, counters: &Counters) -> Vec<Drift> {
    let mut found: Vec<Findings> = roles.iter().map(|role| drift::role_changes(role, survey)).collect();
    let failed_all = |found: &mut Vec<Findings>, why: String| found.iter_mut().for_each(|f| f.failed.push(why.clone()));
    match master(target, counters).await {
        Err(error) => failed_all(&mut found, error.to_string()),
        Ok(mut conn) => match invoker_routines(&mut conn, survey, counters).await {
            Err(error) => failed_all(&mut found, error.context("listing routines").message),
            Ok(routines) => {
                for (role, found) in roles.iter().zip(&mut found) {
                    // A login the run creates holds nothing yet: all of its level is to grant.
                    for login in role.logins().filter(|login| *login == role.user || survey.existing(login).is_some()) {
                        match held(&mut conn, login, counters).await {
                            Ok(held) => found.add(difference(role, login, survey, &routines, &held).findings),
                            Err(error) => found.failed.push(error.context(format!("reading the privileges of {login}")).message),
                        }
                    }
                }
                let _ = conn.disconnect().await; // safe: nothing was changed
            }
        },
    }
    found.into_iter().map(Findings::into_drift).collect()
}

/// The `SQL SECURITY INVOKER` routines of the survey's databases.
async fn invoker_routines(conn: &mut Conn, survey: &Survey, counters: &Counters) -> Result<Vec<Routine>, DbError> {
    counters.sent(1);
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

/// What a login holds below the global level: on databases, tables, columns and routines.
async fn held(conn: &mut Conn, login: &str, counters: &Counters) -> Result<Vec<Held>, DbError> {
    let mysql = |e: mysql_async::Error| DbError::from_mysql(&e);
    let grantee = account(login);
    counters.sent(2);
    let rows: Vec<(String, String, String, String, String, String)> = conn
        .exec(
            "SELECT 'database', table_schema, '', '', privilege_type, is_grantable FROM information_schema.schema_privileges \
             WHERE grantee = ? \
             UNION ALL SELECT 'table', table_schema, table_name, '', privilege_type, is_grantable \
             FROM information_schema.table_privileges WHERE grantee = ? \
             UNION ALL SELECT 'column', table_schema, table_name, column_name, privilege_type, is_grantable \
             FROM information_schema.column_privileges WHERE grantee = ?",
            (&grantee, &grantee, &grantee),
        )
        .await
        .map_err(mysql)?;
    let mut held: Vec<Held> = rows
        .into_iter()
        .map(|(kind, db, table, column, privilege, grantable)| {
            let on = match kind.as_str() {
                "database" => On::Database(db),
                "table" => On::Table { db, table },
                _ => On::Column { db, table, column },
            };
            Held { on, privilege, grant_option: grantable == "YES" }
        })
        .collect();
    let routines: Vec<(String, String, String, String)> = conn
        .exec("SELECT db, routine_name, routine_type, proc_priv FROM mysql.procs_priv WHERE user = ? AND host = '%'", (login,))
        .await
        .map_err(mysql)?;
    for (db, name, kind, privileges) in routines {
        let on = On::Routine { db, kind, name };
        let grant_option = privileges.split(',').any(|p| p == "Grant");
        let each = privileges.split(',').filter(|p| !p.is_empty() && *p != "Grant").map(|p| p.to_uppercase());
        held.extend(each.map(|privilege| Held { on: on.clone(), privilege, grant_option }));
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
pub(crate) async fn revoke(target: &Target, roles: &[RoleSpec], survey: &Survey, counters: &Counters) -> Vec<Retirement> {
    let mut conn = match master(target, counters).await {
        Ok(conn) => conn,
        Err(error) => return Retirement::stopped_for_each(roles, error.to_string()),
    };
    let mut retirements = Vec::new();
    for role in roles {
        let mut retirement = Retirement::default();
        for login in role.found(survey) {
            if let Err(error) = retire(&mut conn, target, login, &mut retirement, counters).await {
                retirement.remains.push(format!("{login} ({})", error.message));
            }
        }
        retirements.push(retirement);
    }
    let _ = conn.disconnect().await; // safe: each statement is committed; a failed goodbye changes nothing
    retirements
}

async fn retire(
    conn: &mut Conn,
    target: &Target,
    login: &str,
    retirement: &mut Retirement,
    counters: &Counters,
) -> Result<(), DbError> {
    let mysql = |e: mysql_async::Error| DbError::from_mysql(&e);
    run(conn, target, &[format!("ALTER USER {} ACCOUNT LOCK", account(login))], counters).await?;
    counters.sent(1);
    let sessions: Vec<u64> =
        conn.exec("SELECT id FROM information_schema.processlist WHERE user = ?", (login,)).await.map_err(mysql)?;
    for id in sessions {
        counters.sent(1);
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
    counters.sent(1);
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
        run(conn, target, &[format!("DROP USER {}", account(login))], counters).await?;
    }
    Ok(())
}

pub async fn check_login(target: &Target, user: &str, password: &SecretString) -> Result<(), DbError> {
    let mut conn = connect(target, user, password).await?;
    conn.query_drop("SELECT 1").await.map_err(|e| DbError::from_mysql(&e))?;
    let _ = conn.disconnect().await; // safe: the login was proven
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
