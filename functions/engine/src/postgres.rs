//! PostgreSQL (`postgres`, `aurora-postgresql`), with the master RDS gives: not a
//! superuser, but `CREATEROLE`, `CREATEDB` and `rds_superuser`, owning only what it
//! created.
//!
//! - The survey lists the databases the master may enter (and those it may not,
//!   reported), and the roles that exist, with what their level does not allow.
//! - Roles are cluster-wide: created or altered in one transaction, a savepoint
//!   each, with SCRAM-SHA-256 verifiers computed here, so the plaintext never
//!   reaches the server, its logs or `pg_stat_statements`. Only the attributes a
//!   `CREATEROLE` user may set are named; `SUPERUSER`, `REPLICATION` and
//!   `BYPASSRLS` are removed only where the master is a superuser, and a role that
//!   has one is refused otherwise. Each is marked with a comment.
//! - Every database is granted over its own connection, a bounded number at
//!   once: one transaction per database, a savepoint per role. Only what the
//!   master may grant is granted; the rest (schemas and relations of other owners)
//!   is reported. `rw` gets EXECUTE only on functions of no extension; `ddl` gets
//!   no TRIGGER on tables it does not own, so it cannot make another role run its code.

mod acl;
mod socket;

use std::collections::HashSet;

use futures::stream::{self, StreamExt};
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Config, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::connections::{Connections, Slot};
use super::drift::{self, Change, Drift, Findings};
use super::{
    limited, DbError, EngineError, Escalation, Existing, Globs, Grants, Level, PerRole, Retirement, RoleSpec, Scope, Survey,
    Target,
};
use socket::Socket;

/// Databases that are never provisioned.
const SKIPPED_DATABASES: [&str; 3] = ["template0", "template1", "rdsadmin"];

/// The comment that marks a role as dbroles' own.
pub const MANAGED_COMMENT: &str = "managed by dbroles";

/// Attempts at a transaction that hits a concurrent catalog update.
const ATTEMPTS: usize = 4;

pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The startup options of every session dbroles opens. The `search_path` is
/// pinned to the catalog: startup options win over `ALTER DATABASE` and `ALTER
/// ROLE` settings, so no schema a database's users or owner control is ever
/// searched for a function, operator, type or cast the master's statements name.
/// libpq splits options on spaces: the path has none.
pub fn session_options(statement_timeout: std::time::Duration) -> String {
    format!("-c statement_timeout={} -c search_path=pg_catalog,pg_temp", statement_timeout.as_millis())
}

/// Connects to one database once fewer than the bound are open; the connection
/// keeps its slot until it has closed. The message names the host and user, never the password.
pub(crate) async fn connect(
    target: &Target,
    user: &str,
    password: &SecretString,
    db: &str,
    connections: &Connections,
) -> Result<Client, DbError> {
    let slot = connections.slot().await;
    let mut config = Config::new();
    config
        .user(user)
        .password(password.expose_secret())
        .dbname(db)
        .application_name("dbroles")
        .options(session_options(target.statement_timeout));
    let where_ = || format!("connecting to {}:{} as {user} (database {db})", target.host, target.port);
    let tls = target.tls.client_config().map_err(|e| DbError::permanent(format!("{}: {e}", where_())))?;
    let connect = async {
        let socket =
            Socket::connect(&target.host, target.port).await.map_err(|e| DbError::transient(format!("{}: {e}", where_())))?;
        let failed = |e: tokio_postgres::Error| describe(&e).context(where_());
        match tls {
            None => {
                config.ssl_mode(SslMode::Disable);
                let (client, connection) = config.connect_raw(socket, NoTls).await.map_err(failed)?;
                tokio::spawn(serve(connection, slot, target.connect_timeout));
                Ok(client)
            }
            Some(tls) => {
                config.ssl_mode(SslMode::Require);
                let Ok(tls) = MakeTlsConnect::<Socket>::make_tls_connect(&mut MakeRustlsConnect::new(tls), &target.host);
                let (client, connection) = config.connect_raw(socket, tls).await.map_err(failed)?;
                tokio::spawn(serve(connection, slot, target.connect_timeout));
                Ok(client)
            }
        }
    };
    let client = limited(target.connect_timeout + std::time::Duration::from_secs(1), where_, connect).await?;
    connections.opened();
    Ok(client)
}

/// Runs a connection until its client is dropped and the server has closed it
/// ([`Socket`]), then gives its slot back. A server that never closes it keeps
/// the slot only for `linger`.
async fn serve(connection: impl std::future::Future, slot: Slot, linger: std::time::Duration) {
    let _ = tokio::time::timeout(linger, connection).await;
    drop(slot);
}

fn describe(error: &tokio_postgres::Error) -> DbError {
    DbError::from_postgres(error)
}

fn is_concurrent_update(error: &tokio_postgres::Error) -> bool {
    error.code().is_some_and(|code| {
        *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::UNIQUE_VIOLATION
            || (*code == SqlState::INTERNAL_ERROR && error.to_string().contains("concurrently"))
    }) || error.as_db_error().is_some_and(|db| db.message().contains("tuple concurrently"))
}

async fn master(target: &Target, db: &str, connections: &Connections) -> Result<Client, EngineError> {
    connect(target, &target.master_user, &target.master_password, db, connections)
        .await
        .map_err(|source| EngineError::Connect { target: target.describe(), source })
}

fn failed(target: &Target, what: &str) -> impl Fn(tokio_postgres::Error) -> EngineError {
    let context = format!("{what} on {}", target.describe());
    move |error| EngineError::Failed(describe(&error).context(&context))
}

pub(crate) async fn survey(
    target: &Target,
    scope: &Scope,
    roles: &[RoleSpec],
    connections: &Connections,
) -> Result<Survey, EngineError> {
    let client = master(target, "postgres", connections).await?;
    let logins: Vec<&str> = roles.iter().flat_map(RoleSpec::logins).collect();
    let logins: [(&(dyn ToSql + Sync), Type); 1] = [(&logins, Type::TEXT_ARRAY)];
    // The three go out together: tokio-postgres pipelines one client's queries.
    let (master, databases, existing) = futures::try_join!(
        client.query_typed("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) current_user", &[]),
        client.query_typed(
            "SELECT datname::pg_catalog.text, pg_catalog.has_database_privilege(oid, 'CONNECT'), \
             pg_catalog.has_database_privilege(oid, 'CONNECT WITH GRANT OPTION'), \
             pg_catalog.has_database_privilege('public', oid, 'CONNECT') \
             FROM pg_catalog.pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname",
            &[],
        ),
        client.query_typed(EXISTING_ROLES, &logins),
    )
    .map_err(failed(target, "surveying databases and roles"))?;
    connections.sent(3);
    let master_is_superuser = master.first().is_some_and(|row| row.get(0));
    let mut survey = Survey { master_is_superuser, ..Survey::default() };
    for row in databases.iter().filter(|row| !SKIPPED_DATABASES.contains(&row.get::<_, &str>(0))) {
        let (name, enters, grants, public): (String, bool, bool, bool) = (row.get(0), row.get(1), row.get(2), row.get(3));
        let inside = scope.databases.covers(&name);
        match (enters, grants || public, inside) {
            (false, _, true) => survey.skipped.push(format!("database {name} (the master may not connect to it)")),
            (true, false, true) => survey.skipped.push(format!("database {name} (the master may not grant CONNECT on it)")),
            // Outside the scope, what the master cannot enter it cannot have granted.
            (false, _, false) => {}
            (true, _, _) => {
                // Where everyone may connect and the master may not grant it, there is nothing to grant.
                if grants {
                    survey.grant_connect.push(name.clone());
                }
                match inside {
                    true => survey.databases.push(name),
                    false => survey.outside.push(name),
                }
            }
        }
    }
    survey.existing = existing.iter().map(|row| existing_role(row, roles)).collect();
    Ok(survey)
}

/// The roles of `$1` that exist: attributes, comment, memberships, and the databases they own objects in.
const EXISTING_ROLES: &str = "SELECT r.rolname::pg_catalog.text, r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolreplication, \
     r.rolbypassrls, coalesce(r.rolvaliduntil OPERATOR(pg_catalog.<>) 'infinity', false), \
     coalesce(pg_catalog.shobj_description(r.oid, 'pg_authid'), ''), \
     ARRAY(SELECT g.rolname::pg_catalog.text FROM pg_catalog.pg_auth_members m \
           JOIN pg_catalog.pg_roles g ON g.oid OPERATOR(pg_catalog.=) m.roleid \
           WHERE m.member OPERATOR(pg_catalog.=) r.oid), \
     ARRAY(SELECT DISTINCT d.datname::pg_catalog.text FROM pg_catalog.pg_shdepend s \
           JOIN pg_catalog.pg_database d ON d.oid OPERATOR(pg_catalog.=) s.dbid \
           WHERE s.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_authid'::pg_catalog.regclass \
           AND s.refobjid OPERATOR(pg_catalog.=) r.oid AND s.deptype OPERATOR(pg_catalog.=) 'o') \
     FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) ANY($1)";

fn existing_role(row: &tokio_postgres::Row, roles: &[RoleSpec]) -> Existing {
    let user: String = row.get(0);
    // A second login's membership of its level's role is the level's own design.
    let level = roles.iter().find(|role| role.alternate.as_deref() == Some(user.as_str())).map(|role| &role.user);
    let attributes = ["SUPERUSER", "CREATEROLE", "CREATEDB", "REPLICATION", "BYPASSRLS", "VALID UNTIL"];
    let mut escalations: Vec<Escalation> =
        (1..=6).filter(|i| row.get::<_, bool>(i)).map(|i| Escalation::Attribute(attributes[i - 1])).collect();
    let memberships = row.get::<_, Vec<String>>(8).into_iter().filter(|group| Some(group) != level);
    escalations.extend(memberships.map(Escalation::MemberOf));
    let managed = Some(row.get::<_, String>(7) == MANAGED_COMMENT);
    Existing { user, managed, escalations, owns_in: row.get(9) }
}

/// The statements that give a login its `verifier` (a SCRAM password; `None`
/// keeps the one it has) and nothing beyond its level.
fn role_statements(login: &str, verifier: Option<&str>, existing: Option<&Existing>) -> Vec<String> {
    let user = quote_ident(login);
    let password = verifier.map(|verifier| format!(" PASSWORD {}", quote_literal(verifier))).unwrap_or_default();
    let Some(existing) = existing else {
        return vec![
            format!("CREATE ROLE {user} WITH LOGIN NOCREATEDB NOCREATEROLE{password}"),
            format!("COMMENT ON ROLE {user} IS {}", quote_literal(MANAGED_COMMENT)),
        ];
    };
    // Only what a CREATEROLE master may say; the rest only when it must be removed (and the master may).
    let mut attributes = vec!["LOGIN", "NOCREATEDB", "NOCREATEROLE"];
    for escalation in &existing.escalations {
        match escalation {
            Escalation::Attribute("SUPERUSER") => attributes.push("NOSUPERUSER"),
            Escalation::Attribute("REPLICATION") => attributes.push("NOREPLICATION"),
            Escalation::Attribute("BYPASSRLS") => attributes.push("NOBYPASSRLS"),
            _ => {}
        }
    }
    let mut sql = vec![format!("ALTER ROLE {user} WITH {}{password} VALID UNTIL 'infinity'", attributes.join(" "))];
    for escalation in &existing.escalations {
        if let Escalation::MemberOf(group) = escalation {
            sql.push(format!("REVOKE {} FROM {user}", quote_ident(group)));
        }
    }
    sql.push(format!("COMMENT ON ROLE {user} IS {}", quote_literal(MANAGED_COMMENT)));
    sql
}

/// A level's statements: each login it has or gets, its second login made a
/// member of the role whose sessions run as it, and the memberships the master
/// needs (`ALTER DEFAULT PRIVILEGES FOR ROLE <ddl>`, `REASSIGN OWNED`).
fn level_statements(role: &RoleSpec, verifier: &str, survey: &Survey) -> Vec<String> {
    let mut sql = Vec::new();
    for login in role.present(survey) {
        let existing = survey.existing(login);
        sql.extend(role_statements(login, role.sets(login).then_some(verifier), existing));
        if login == role.user {
            continue;
        }
        let (user, login_) = (quote_ident(&role.user), quote_ident(login));
        sql.push(format!("GRANT {user} TO {login_}"));
        sql.push(format!("ALTER ROLE {login_} SET role = {}", quote_literal(&role.user)));
        // What it made outside its level's role goes to the role: the master needs both roles' rights.
        if existing.is_some_and(|existing| !existing.owns_in.is_empty()) {
            sql.push(format!("GRANT {login_} TO CURRENT_USER"));
            if role.level != Level::Ddl {
                sql.push(format!("GRANT {user} TO CURRENT_USER"));
            }
        }
    }
    if role.level == Level::Ddl {
        sql.push(format!("GRANT {} TO CURRENT_USER", quote_ident(&role.user)));
    }
    sql
}

pub(crate) async fn set_passwords(target: &Target, roles: &[RoleSpec], survey: &Survey, connections: &Connections) -> PerRole {
    let (client, verifiers) = futures::join!(master(target, "postgres", connections), verifiers(roles));
    let client = client?;
    let scrub: Vec<&str> = verifiers.iter().map(String::as_str).collect();
    let mut last = Vec::new();
    for attempt in 0..ATTEMPTS {
        match set_passwords_once(&client, roles, &verifiers, survey, connections).await {
            Ok(results) => return Ok(results.into_iter().map(|result| result.map_err(|e| e.scrubbed(&scrub))).collect()),
            Err((error, retry)) => {
                let _ = client.batch_execute("ROLLBACK").await; // safe: only ends a failed transaction
                let error = error.scrubbed(&scrub);
                last = roles.iter().map(|_| Err(error.clone())).collect();
                if !retry {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
            }
        }
    }
    Ok(last)
}

/// Each role's SCRAM-SHA-256 verifier (4,096 rounds of HMAC-SHA-256), hashed
/// on the blocking threads side by side while the master's session opens.
async fn verifiers(roles: &[RoleSpec]) -> Vec<String> {
    let hashing = roles.iter().map(|role| {
        let password = role.password.clone();
        tokio::task::spawn_blocking(move || postgres_protocol::password::scram_sha_256(password.expose_secret().as_bytes()))
    });
    let hashed = futures::future::join_all(hashing).await;
    hashed.into_iter().map(|verifier| verifier.expect("hashing does not panic")).collect()
}

/// One transaction, a savepoint per role: a role refused or failed leaves the others.
async fn set_passwords_once(
    client: &Client,
    roles: &[RoleSpec],
    verifiers: &[String],
    survey: &Survey,
    connections: &Connections,
) -> Result<Vec<Result<(), DbError>>, (DbError, bool)> {
    let refusals: Vec<Option<String>> = roles.iter().map(|role| refusal(role, survey)).collect();
    let work: Vec<Vec<String>> = roles
        .iter()
        .zip(verifiers)
        .zip(&refusals)
        .map(|((role, verifier), refused)| match refused {
            Some(_) => Vec::new(),
            None => level_statements(role, verifier, survey),
        })
        .collect();
    let ran = in_savepoints(client, &work, connections).await?;
    Ok(refusals.into_iter().zip(ran).map(|(refused, ran)| refused.map_or(ran, |why| Err(DbError::permanent(why)))).collect())
}

/// Why a role is left as it is: one of its logins has what only a superuser may remove, and the master is none.
fn refusal(role: &RoleSpec, survey: &Survey) -> Option<String> {
    if survey.master_is_superuser {
        return None;
    }
    role.logins().find_map(|login| {
        let escalation = survey.existing(login)?.escalations.iter().find(|e| e.needs_superuser())?;
        Some(format!("{login} has {escalation}, which only a superuser may remove: it is left as it is"))
    })
}

/// Each role's statements in one transaction, a savepoint each (a role with none
/// is left out), in one round trip. If the server refuses a statement, the
/// transaction is rolled back and run again a round trip per role, so a role
/// refused leaves the others: one result per role. `Err` if the transaction is
/// lost (retry it if `true`).
async fn in_savepoints(
    client: &Client,
    work: &[Vec<String>],
    connections: &Connections,
) -> Result<Vec<Result<(), DbError>>, (DbError, bool)> {
    let done = || work.iter().map(|_| Ok(())).collect();
    if work.iter().all(Vec::is_empty) {
        return Ok(done());
    }
    let roles: Vec<&Vec<String>> = work.iter().filter(|sql| !sql.is_empty()).collect();
    let batch: Vec<String> = roles.iter().map(|sql| in_a_savepoint(sql)).collect();
    connections.sent(2 + roles.iter().map(|sql| sql.len() + 2).sum::<usize>());
    match client.batch_execute(&format!("BEGIN;\n{};\nCOMMIT", batch.join(";\n"))).await {
        Ok(()) => return Ok(done()),
        Err(error) if is_concurrent_update(&error) => return Err((describe(&error), true)),
        Err(error) if error.as_db_error().is_none() => return Err((describe(&error), false)),
        Err(_) => {}
    }
    let lost = |e: tokio_postgres::Error| (describe(&e), is_concurrent_update(&e));
    connections.sent(2);
    client.batch_execute("ROLLBACK; BEGIN").await.map_err(lost)?;
    let mut results = Vec::new();
    for sql in work {
        results.push(if sql.is_empty() { Ok(()) } else { run_in_savepoint(client, sql, connections).await? });
    }
    connections.sent(1);
    client.batch_execute("COMMIT").await.map_err(lost)?;
    Ok(results)
}

/// One role's statements between a savepoint and its release.
fn in_a_savepoint(sql: &[String]) -> String {
    format!("SAVEPOINT dbroles_role;\n{};\nRELEASE SAVEPOINT dbroles_role", sql.join(";\n"))
}

/// Runs one role's statements in a savepoint: `Ok(Err)` if the server refused
/// them (rolled back to the savepoint), `Err` if the transaction is lost (retry it if `true`).
async fn run_in_savepoint(
    client: &Client,
    sql: &[String],
    connections: &Connections,
) -> Result<Result<(), DbError>, (DbError, bool)> {
    connections.sent(sql.len() + 2);
    match client.batch_execute(&in_a_savepoint(sql)).await {
        Ok(()) => Ok(Ok(())),
        Err(error) if is_concurrent_update(&error) => Err((describe(&error), true)),
        Err(error) if error.as_db_error().is_none() => Err((describe(&error), false)),
        Err(error) => {
            connections.sent(2);
            client
                .batch_execute("ROLLBACK TO SAVEPOINT dbroles_role; RELEASE SAVEPOINT dbroles_role")
                .await
                .map_err(|e| (describe(&e), false))?;
            Ok(Err(describe(&error)))
        }
    }
}

/// A schema of a database, and what the master may grant in it.
pub struct Schema {
    pub name: String,
    /// USAGE and CREATE with grant option (the master owns it, or was granted them so).
    pub usage: bool,
    pub create: bool,
    /// Tables, views and sequences of roles whose rights the master does not hold.
    pub foreign: i64,
}

/// What the master may grant in one database.
pub struct Grantable {
    /// CONNECT on the database itself.
    pub connect: bool,
    pub schemas: Vec<Schema>,
    /// Tables and views (qualified, quoted), and sequences, of roles whose rights the master holds.
    pub tables: Vec<String>,
    pub sequences: Vec<String>,
    /// Functions of no extension that only those granted may execute.
    pub functions: Vec<String>,
}

/// A namespace of a database's own (`n`): no system schema, no session's temporary one.
macro_rules! user_schema {
    () => {
        "NOT (n.nspname OPERATOR(pg_catalog.=) ANY ('{pg_catalog,information_schema,pg_toast}'::pg_catalog.name[])) \
         AND NOT (n.nspname OPERATOR(pg_catalog.~~) 'pg\\_temp\\_%'::pg_catalog.text) \
         AND NOT (n.nspname OPERATOR(pg_catalog.~~) 'pg\\_toast\\_temp\\_%'::pg_catalog.text)"
    };
}

/// The schemas, and what the master may grant on each.
const SCHEMAS: &str = concat!(
    "SELECT n.nspname::pg_catalog.text, pg_catalog.has_schema_privilege(n.oid, 'USAGE WITH GRANT OPTION'), \
     pg_catalog.has_schema_privilege(n.oid, 'CREATE WITH GRANT OPTION'), \
     (SELECT pg_catalog.count(*) FROM pg_catalog.pg_class c WHERE c.relnamespace OPERATOR(pg_catalog.=) n.oid \
      AND c.relkind OPERATOR(pg_catalog.=) ANY ('{r,p,v,m,f,S}'::pg_catalog.\"char\"[]) \
      AND NOT pg_catalog.pg_has_role(c.relowner, 'USAGE')) \
     FROM pg_catalog.pg_namespace n WHERE ",
    user_schema!(),
    " ORDER BY 1"
);

/// The relations the master may grant on: in schemas it may grant USAGE on, of
/// roles whose rights it holds (its own), named schema-qualified and quoted whatever the path.
const RELATIONS: &str = concat!(
    "SELECT n.nspname::pg_catalog.text, pg_catalog.format('%I.%I', n.nspname, c.relname), c.relkind OPERATOR(pg_catalog.=) 'S' \
     FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace \
     WHERE c.relkind OPERATOR(pg_catalog.=) ANY ('{r,p,v,m,f,S}'::pg_catalog.\"char\"[]) \
     AND pg_catalog.pg_has_role(c.relowner, 'USAGE') \
     AND pg_catalog.has_schema_privilege(n.oid, 'USAGE WITH GRANT OPTION') AND ",
    user_schema!(),
    " ORDER BY 2"
);

/// Functions of no extension, that run as their caller (a SECURITY DEFINER
/// function would lend its owner's rights), that only those granted may execute,
/// in schemas the master may grant USAGE on. `regprocedure` prints them
/// schema-qualified under the pinned path. The schemas are narrowed first (`OFFSET
/// 0` keeps the planner from merging the two), so the privilege checks run on the
/// database's own functions, not on the thousands of `pg_catalog`.
const FUNCTIONS: &str = concat!(
    "SELECT f.nsp, f.oid::pg_catalog.regprocedure::pg_catalog.text FROM ( \
       SELECT n.nspname::pg_catalog.text AS nsp, p.oid FROM pg_catalog.pg_proc p \
       JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace \
       WHERE p.prokind OPERATOR(pg_catalog.=) ANY ('{f,p}'::pg_catalog.\"char\"[]) AND NOT p.prosecdef \
       AND pg_catalog.has_schema_privilege(n.oid, 'USAGE WITH GRANT OPTION') AND ",
    user_schema!(),
    " OFFSET 0) f \
     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
         WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass \
         AND d.objid OPERATOR(pg_catalog.=) f.oid AND d.deptype OPERATOR(pg_catalog.=) 'e') \
     AND pg_catalog.has_function_privilege(f.oid, 'EXECUTE WITH GRANT OPTION') \
     AND NOT pg_catalog.has_function_privilege('public', f.oid, 'EXECUTE') ORDER BY 2"
);

/// What the master may grant in one database, in the schemas `inside` covers.
/// Every function, operator, type and table is named in `pg_catalog`, as a
/// second line of defence behind the pinned `search_path` ([`session_options`]).
/// The three queries go out together, and the scope is applied here.
async fn grantable(client: &Client, connect: bool, inside: &Globs) -> Result<Grantable, tokio_postgres::Error> {
    let (schemas, relations, functions) = futures::try_join!(
        client.query_typed(SCHEMAS, &[]),
        client.query_typed(RELATIONS, &[]),
        client.query_typed(FUNCTIONS, &[])
    )?;
    let schemas: Vec<Schema> = schemas
        .iter()
        .map(|row| Schema { name: row.get(0), usage: row.get(1), create: row.get(2), foreign: row.get(3) })
        .filter(|schema| inside.covers(&schema.name))
        .collect();
    let usable: HashSet<&str> = schemas.iter().filter(|s| s.usage).map(|s| s.name.as_str()).collect();
    let covered = |row: &&tokio_postgres::Row| usable.contains(row.get::<_, &str>(0));
    let (sequences, tables): (Vec<_>, Vec<_>) = relations.iter().filter(covered).partition(|row| row.get::<_, bool>(2));
    let name = |row: &tokio_postgres::Row| row.get::<_, String>(1);
    let (tables, sequences) = (tables.into_iter().map(name).collect(), sequences.into_iter().map(name).collect());
    let functions = functions.iter().filter(covered).map(name).collect();
    Ok(Grantable { connect, schemas, tables, sequences, functions })
}

/// What the master may not grant in a database, as the role's message names it.
fn not_granted(db: &str, grantable: &Grantable, level: Level) -> Vec<String> {
    let mut skipped = Vec::new();
    for schema in &grantable.schemas {
        if !schema.usage {
            skipped.push(format!("schema {} in {db} (another owner's)", schema.name));
        } else if schema.foreign > 0 {
            skipped.push(format!("{} relation(s) of other owners in {}.{}", schema.foreign, db, schema.name));
        }
        if schema.usage && !schema.create && level == Level::Ddl {
            skipped.push(format!("CREATE on schema {} in {db} (another owner's)", schema.name));
        }
    }
    skipped
}

pub(crate) async fn grant(
    target: &Target,
    scope: &Scope,
    roles: &[RoleSpec],
    survey: &Survey,
    connections: &Connections,
) -> Vec<Grants> {
    let nothing = Globs::nothing();
    let databases = visited(scope, survey, &nothing);
    // The futures are collected first, so no closure is held across an await and
    // the whole future stays `Send` for any lifetime (a spawned task can await it).
    let pending: Vec<_> =
        databases.map(|(db, schemas)| grant_database(target, db, schemas, roles, survey, connections)).collect();
    let per_database: Vec<Vec<Grants>> = each_database(target, pending).await;
    let mut grants: Vec<Grants> = roles.iter().map(|_| Grants::default()).collect();
    for (db, results) in survey.databases.iter().chain(&survey.outside).zip(per_database) {
        for (role, result) in grants.iter_mut().zip(results) {
            role.failed.extend(result.failed.into_iter().map(|e| e.context(format!("database {db}"))));
            role.skipped.extend(result.skipped);
            role.not_revocable.extend(result.not_revocable);
        }
    }
    for role in &mut grants {
        role.skipped.splice(0..0, survey.skipped.iter().cloned());
    }
    grants
}

/// The work of each database, as many at once as the bound allows, in their order.
async fn each_database<F: std::future::Future>(target: &Target, pending: Vec<F>) -> Vec<F::Output> {
    stream::iter(pending).buffered(target.max_connections.max(1)).collect().await
}

/// Every database a run visits, with the schemas it covers there: the scope's,
/// and outside the scope `nothing`, so everything the roles hold there is revoked.
fn visited<'a>(scope: &'a Scope, survey: &'a Survey, nothing: &'a Globs) -> impl Iterator<Item = (&'a String, &'a Globs)> {
    let inside = survey.databases.iter().map(|db| (db, &scope.schemas));
    inside.chain(survey.outside.iter().map(move |db| (db, nothing)))
}

/// What a level's second login owns in `db` goes to the level's role: the login's
/// sessions run as the role, and what it made after `SET ROLE NONE` must not stay its own.
fn reassignments(db: &str, role: &RoleSpec, survey: &Survey) -> Vec<String> {
    let owner = role.alternate.as_deref().and_then(|login| survey.existing(login));
    match owner.filter(|existing| existing.owns_in.iter().any(|name| name == db)) {
        Some(existing) => vec![format!("REASSIGN OWNED BY {} TO {}", quote_ident(&existing.user), quote_ident(&role.user))],
        None => Vec::new(),
    }
}

/// One database: one connection, one transaction, a savepoint per role.
async fn grant_database(
    target: &Target,
    db: &str,
    schemas: &Globs,
    roles: &[RoleSpec],
    survey: &Survey,
    connections: &Connections,
) -> Vec<Grants> {
    let all_failed = |error: DbError| Grants::failed_for_each(roles, error);
    let client = match connect(target, &target.master_user, &target.master_password, db, connections).await {
        Ok(client) => client,
        Err(error) => return all_failed(error),
    };
    let mut last = Vec::new();
    for attempt in 0..ATTEMPTS {
        match grant_database_once(&client, target, db, schemas, roles, survey, connections).await {
            Ok(results) => return results,
            Err((error, retry)) => {
                let _ = client.batch_execute("ROLLBACK").await; // safe: only ends a failed transaction
                last = all_failed(error);
                if !retry {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
            }
        }
    }
    last
}

async fn grant_database_once(
    client: &Client,
    target: &Target,
    db: &str,
    schemas: &Globs,
    roles: &[RoleSpec],
    survey: &Survey,
    connections: &Connections,
) -> Result<Vec<Grants>, (DbError, bool)> {
    let (found, held) = read_database(client, db, schemas, roles, survey, connections)
        .await
        .map_err(|e| (describe(&e).context("reading privileges"), is_concurrent_update(&e)))?;
    let place = place(target, db, schemas, roles, survey);
    let differences: Vec<acl::Difference> = roles.iter().map(|role| acl::difference(&place, &found, role, &held)).collect();
    // Only the difference: on a server where nothing changed, nothing.
    let work: Vec<Vec<String>> = roles
        .iter()
        .zip(&differences)
        .map(|(role, difference)| {
            let revokes_then_grants = difference.revokes.iter().chain(&difference.grants).cloned();
            reassignments(db, role, survey).into_iter().chain(revokes_then_grants).collect()
        })
        .collect();
    let ran = in_savepoints(client, &work, connections).await?;
    let results = roles.iter().zip(differences).zip(ran).map(|((role, difference), result)| {
        let skipped = if place.whole { Vec::new() } else { not_granted(db, &found, role.level) };
        Grants { failed: result.err().into_iter().collect(), skipped, not_revocable: difference.not_revocable }
    });
    Ok(results.collect())
}

/// Where the roles stand in `db`: inside the scope (its schemas `schemas`) or wholly outside it.
fn place<'a>(target: &'a Target, db: &'a str, schemas: &'a Globs, roles: &'a [RoleSpec], survey: &Survey) -> acl::Place<'a> {
    let whole = !survey.databases.iter().any(|name| name == db);
    let ddl = roles.iter().find(|role| role.level == Level::Ddl).map(|role| role.user.as_str());
    acl::Place { db, schemas, whole, master: &target.master_user, ddl }
}

/// What the master may grant in `db`'s schemas of the scope, and what the roles' logins hold there.
async fn read_database(
    client: &Client,
    db: &str,
    schemas: &Globs,
    roles: &[RoleSpec],
    survey: &Survey,
    connections: &Connections,
) -> Result<(Grantable, Vec<acl::Held>), tokio_postgres::Error> {
    let connect = survey.grant_connect.iter().any(|name| name == db);
    let logins: Vec<&str> = roles.iter().flat_map(RoleSpec::logins).collect();
    // Both at once: tokio-postgres pipelines the queries of one client.
    let (found, held) = futures::try_join!(grantable(client, connect, schemas), acl::held(client, &logins))?;
    connections.sent(4);
    Ok((found, held))
}

/// What a run would change on each role, and what the master may not: the
/// roles themselves, then every database of the scope and outside it. Changes nothing.
pub(crate) async fn plan(
    target: &Target,
    scope: &Scope,
    roles: &[RoleSpec],
    survey: &Survey,
    connections: &Connections,
) -> Vec<Drift> {
    let nothing = Globs::nothing();
    let pending: Vec<_> = visited(scope, survey, &nothing)
        .map(|(db, schemas)| plan_database(target, db, schemas, roles, survey, connections))
        .collect();
    let per_database: Vec<Vec<Findings>> = each_database(target, pending).await;
    let mut found: Vec<Findings> = roles.iter().map(|role| drift::role_changes(role, survey)).collect();
    for results in per_database {
        found.iter_mut().zip(results).for_each(|(found, more)| found.add(more));
    }
    found.into_iter().map(Findings::into_drift).collect()
}

async fn plan_database(
    target: &Target,
    db: &str,
    schemas: &Globs,
    roles: &[RoleSpec],
    survey: &Survey,
    connections: &Connections,
) -> Vec<Findings> {
    let unread = |why: String| {
        let failed = || vec![format!("database {db} could not be read: {why}")];
        roles.iter().map(|_| Findings { failed: failed(), ..Findings::default() }).collect()
    };
    let client = match connect(target, &target.master_user, &target.master_password, db, connections).await {
        Ok(client) => client,
        Err(error) => return unread(error.message),
    };
    let (found, held) = match read_database(&client, db, schemas, roles, survey, connections).await {
        Ok(read) => read,
        Err(error) => return unread(describe(&error).message),
    };
    let place = place(target, db, schemas, roles, survey);
    roles
        .iter()
        .map(|role| {
            let difference = acl::difference(&place, &found, role, &held);
            let reassigned = reassignments(db, role, survey).into_iter().map(|_| {
                let login = role.alternate.as_deref().unwrap_or_default();
                Change::whole(false, format!("reassign what {login} owns in {db} to {}", role.user))
            });
            let changes = reassigned.chain(difference.changes).collect();
            Findings { changes, not_revocable: difference.not_revocable, failed: Vec::new() }
        })
        .collect()
}

/// Retires the roles' logins, in an order that loses nothing: NOLOGIN and the
/// master made a member (`REASSIGN OWNED` and `DROP OWNED` need the role's
/// rights; on 16+ the ADMIN option a CREATEROLE master has on the roles it made
/// allows the grant), their sessions ended (`pg_signal_backend`, which RDS gives
/// `rds_superuser`), then in each database the master enters (several at once)
/// what they own given to the master and what they were granted revoked, and
/// last `DROP ROLE`. No connection is held while the databases are visited.
pub(crate) async fn revoke(target: &Target, roles: &[RoleSpec], survey: &Survey, connections: &Connections) -> Vec<Retirement> {
    let mut retirements: Vec<Retirement> = roles.iter().map(|_| Retirement::default()).collect();
    match master(target, "postgres", connections).await {
        Ok(client) => {
            for (role, retirement) in roles.iter().zip(&mut retirements) {
                for login in role.found(survey) {
                    let user = quote_ident(login);
                    connections.sent(2);
                    let sql = format!("ALTER ROLE {user} NOLOGIN; GRANT {user} TO CURRENT_USER");
                    if let Err(error) = execute(&client, &sql).await {
                        let why = describe(&error).message;
                        retirement.remains.push(format!("{login} (the master may not act for it: {why})"));
                    }
                }
            }
            end_sessions(&client, roles, survey, &mut retirements, connections).await;
        }
        Err(error) => return Retirement::stopped_for_each(roles, error.to_string()),
    }
    let disowning: Vec<_> = roles
        .iter()
        .zip(&retirements)
        .map(|(role, retirement)| match retirement.remains.is_empty() {
            true => role.found(survey).map(quote_ident).collect(),
            false => Vec::new(),
        })
        .collect();
    let pending: Vec<_> = survey.databases.iter().map(|db| disown(target, db, &disowning, connections)).collect();
    let per_database: Vec<Vec<Option<String>>> = each_database(target, pending).await;
    for left in per_database {
        retirements.iter_mut().zip(left).for_each(|(retirement, left)| retirement.remains.extend(left));
    }
    drop_logins(target, roles, survey, &mut retirements, connections).await;
    retirements
}

/// `DROP ROLE` for each login of the roles nothing is left of.
async fn drop_logins(
    target: &Target,
    roles: &[RoleSpec],
    survey: &Survey,
    retirements: &mut [Retirement],
    connections: &Connections,
) {
    let dropping: Vec<(&RoleSpec, &mut Retirement)> =
        roles.iter().zip(retirements).filter(|(_, retirement)| retirement.remains.is_empty()).collect();
    // Logins that never existed need no session.
    if dropping.iter().all(|(role, _)| role.found(survey).next().is_none()) {
        return;
    }
    let client = match master(target, "postgres", connections).await {
        Ok(client) => client,
        Err(error) => return dropping.into_iter().for_each(|(_, retirement)| retirement.remains.push(error.to_string())),
    };
    for (role, retirement) in dropping {
        for login in role.found(survey) {
            connections.sent(1);
            if let Err(error) = execute(&client, &format!("DROP ROLE {}", quote_ident(login))).await {
                retirement.remains.push(format!("{login} ({})", describe(&error).message));
            }
        }
    }
}

/// Ends every session of the roles' logins (also those that logged in before NOLOGIN).
async fn end_sessions(
    client: &Client,
    roles: &[RoleSpec],
    survey: &Survey,
    retirements: &mut [Retirement],
    connections: &Connections,
) {
    let logins: Vec<&str> = roles.iter().flat_map(|role| role.found(survey)).collect();
    connections.sent(1);
    let ended = client
        .query(
            "SELECT usename::pg_catalog.text, pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity \
             WHERE usename OPERATOR(pg_catalog.=) ANY($1) AND pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()",
            &[&logins],
        )
        .await;
    let rows = match ended {
        Ok(rows) => rows,
        Err(error) => {
            let why = format!("its sessions could not be ended: {}", describe(&error).message);
            retirements.iter_mut().for_each(|retirement| retirement.remains.push(why.clone()));
            return;
        }
    };
    for row in rows {
        let (login, ended): (String, bool) = (row.get(0), row.get(1));
        let Some(at) = roles.iter().position(|role| role.logins().any(|name| name == login)) else { continue };
        match ended {
            true => retirements[at].sessions_ended += 1,
            false => retirements[at].remains.push(format!("a session of {login} (the master may not end it)")),
        }
    }
}

/// In one database: what each role's `logins` (quoted) own goes to the master
/// (a table `ddl` made keeps its rows), and what they were granted, default
/// privileges included, is revoked. Per role, what is left of it there.
async fn disown(target: &Target, db: &str, logins: &[Vec<String>], connections: &Connections) -> Vec<Option<String>> {
    if logins.iter().all(Vec::is_empty) {
        return logins.iter().map(|_| None).collect();
    }
    let client = match connect(target, &target.master_user, &target.master_password, db, connections).await {
        Ok(client) => client,
        Err(error) => return logins.iter().map(|_| Some(format!("database {db}: {}", error.message))).collect(),
    };
    let mut left = Vec::new();
    for logins in logins {
        if logins.is_empty() {
            left.push(None);
            continue;
        }
        let sql = format!("REASSIGN OWNED BY {0} TO CURRENT_USER; DROP OWNED BY {0}", logins.join(", "));
        connections.sent(2);
        left.push(execute(&client, &sql).await.err().map(|error| format!("database {db}: {}", describe(&error).message)));
    }
    left
}

/// Runs statements that may be run again, again when they hit a concurrent
/// catalog update (another session changing roles or grants), as the grants are.
async fn execute(client: &Client, sql: &str) -> Result<(), tokio_postgres::Error> {
    for attempt in 1..ATTEMPTS {
        match client.batch_execute(sql).await {
            Err(error) if is_concurrent_update(&error) => {
                tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
            }
            done => return done,
        }
    }
    client.batch_execute(sql).await
}

pub(crate) async fn check_login(
    target: &Target,
    user: &str,
    password: &SecretString,
    connections: &Connections,
) -> Result<(), DbError> {
    let client = connect(target, user, password, "postgres", connections).await?;
    client.simple_query("SELECT 1").await.map_err(|e| describe(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_so_nothing_is_injected() {
        assert_eq!(quote_ident(r#"with"quote"#), r#""with""quote""#);
        assert_eq!(quote_ident("a;drop"), r#""a;drop""#);
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    fn view() -> Grantable {
        Grantable {
            connect: true,
            schemas: vec![Schema { name: "public".into(), usage: true, create: true, foreign: 0 }],
            tables: vec!["items".into()],
            sequences: vec!["items_id_seq".into()],
            functions: vec!["public.touch(integer)".into()],
        }
    }

    fn grants(level: Level) -> String {
        let globs = Globs::default();
        let place = acl::Place { db: "db", schemas: &globs, whole: false, master: "master", ddl: Some("p_ddl") };
        acl::difference(&place, &view(), &RoleSpec::new("p", level), &[]).grants.join(";")
    }

    #[test]
    fn ro_gets_no_write_privilege() {
        let sql = grants(Level::Ro);
        assert!(sql.contains("GRANT SELECT ON TABLE items TO \"p_ro\""), "{sql}");
        assert!(!sql.contains("INSERT") && !sql.contains("CREATE") && !sql.contains("EXECUTE"), "{sql}");
        assert!(sql.contains("FOR ROLE \"p_ddl\""), "{sql}");
    }

    #[test]
    fn ddl_gets_no_trigger_and_rw_executes_only_the_listed_functions() {
        let ddl = grants(Level::Ddl);
        assert!(!ddl.contains("TRIGGER"), "{ddl}");
        let rw = grants(Level::Rw);
        assert!(rw.contains("GRANT EXECUTE ON FUNCTION public.touch(integer) TO \"p_rw\""), "{rw}");
        assert!(!rw.contains("ALL FUNCTIONS") && !rw.contains("ON FUNCTIONS"), "{rw}");
    }
}
