//! PostgreSQL (`postgres`, `aurora-postgresql`).
//!
//! Roles are cluster-wide: they are created or altered first, in one
//! transaction, with SCRAM-SHA-256 verifiers computed here, so the plaintext
//! never reaches the server, its logs or `pg_stat_statements`. Then every
//! database is provisioned over its own connection, a bounded number at once:
//! one transaction per database, a savepoint per role so that one role's
//! failure does not undo or hide the others'.

use std::sync::Arc;

use futures::stream::{self, StreamExt};
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

use super::{limited, Counters, DbError, EngineError, Level, Report, RoleOutcome, RoleSpec, Target};

/// Databases that are never provisioned.
const SKIPPED_DATABASES: [&str; 3] = ["template0", "template1", "rdsadmin"];

/// Attempts at a transaction that hits a concurrent catalog update.
const ATTEMPTS: usize = 4;

pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Connects to one database; the message names the host and user, never the password.
pub(crate) async fn connect(target: &Target, user: &str, password: &SecretString, db: &str) -> Result<Client, DbError> {
    let mut config = Config::new();
    config
        .host(&target.host)
        .port(target.port)
        .user(user)
        .password(password.expose_secret())
        .dbname(db)
        .application_name("dbroles")
        .connect_timeout(target.connect_timeout)
        .options(format!("-c statement_timeout={}", target.statement_timeout.as_millis()));
    let where_ = || format!("connecting to {}:{} as {user} (database {db})", target.host, target.port);
    let tls = target.tls.client_config().map_err(|e| DbError::permanent(format!("{}: {e}", where_())))?;
    let connect = async {
        match tls {
            None => {
                config.ssl_mode(SslMode::Disable);
                let (client, connection) = config.connect(NoTls).await.map_err(|e| describe(&e).context(where_()))?;
                tokio::spawn(connection);
                Ok(client)
            }
            Some(tls) => {
                config.ssl_mode(SslMode::Require);
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
                let (client, connection) = config.connect(tls).await.map_err(|e| describe(&e).context(where_()))?;
                tokio::spawn(connection);
                Ok(client)
            }
        }
    };
    limited(target.connect_timeout + std::time::Duration::from_secs(1), where_, connect).await
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

pub async fn provision(target: &Target, roles: &[RoleSpec]) -> Result<Report, EngineError> {
    let counters = Arc::new(Counters::default());
    let master = connect(target, &target.master_user, &target.master_password, "postgres")
        .await
        .map_err(|source| EngineError::Connect { target: target.describe(), source })?;
    counters.connection();
    if let Err(error) = create_roles(&master, roles, &counters).await {
        let outcomes = roles
            .iter()
            .map(|role| RoleOutcome { level: role.level, user: role.user.clone(), result: Err(error.clone()) })
            .collect();
        return Ok(counters.into_report(outcomes, Vec::new()));
    }
    let databases: Vec<String> = master
        .query("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname", &[])
        .await
        .map_err(|e| EngineError::Failed(describe(&e).context(format!("listing databases on {}", target.describe()))))?
        .iter()
        .map(|row| row.get::<_, String>(0))
        .filter(|name| !SKIPPED_DATABASES.contains(&name.as_str()))
        .collect();
    counters.sent(1);
    drop(master);

    // Each database on its own connection, a bounded number at once.
    // The futures are collected first, so no closure is held across an await and
    // the whole future stays `Send` for any lifetime (a spawned task can await it).
    let pending: Vec<_> = databases.iter().map(|db| provision_database(target, db, roles, &counters)).collect();
    let per_database: Vec<Vec<Result<(), DbError>>> = stream::iter(pending).buffered(target.concurrency.max(1)).collect().await;
    let outcomes = roles
        .iter()
        .enumerate()
        .map(|(i, role)| {
            let failures: Vec<DbError> = per_database
                .iter()
                .zip(&databases)
                .filter_map(|(results, db)| results[i].clone().err().map(|e| e.context(format!("database {db}"))))
                .collect();
            let result = match failures.is_empty() {
                true => Ok(()),
                false => Err(DbError {
                    message: failures.iter().map(|e| e.message.as_str()).collect::<Vec<_>>().join("; "),
                    transient: failures.iter().all(|e| e.transient),
                }),
            };
            RoleOutcome { level: role.level, user: role.user.clone(), result }
        })
        .collect();
    Ok(counters.into_report(outcomes, databases))
}

/// `CREATE ROLE` or `ALTER ROLE` for each, in one transaction, retried on concurrent catalog updates.
async fn create_roles(master: &Client, roles: &[RoleSpec], counters: &Counters) -> Result<(), DbError> {
    let names: Vec<&str> = roles.iter().map(|role| role.user.as_str()).collect();
    let mut last = DbError::permanent("no attempt was made");
    for attempt in 0..ATTEMPTS {
        let existing: Vec<String> = master
            .query("SELECT rolname::text FROM pg_roles WHERE rolname = ANY($1)", &[&names])
            .await
            .map_err(|e| describe(&e).context("reading roles"))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        counters.sent(1);
        let mut sql = vec!["BEGIN".to_string()];
        for role in roles {
            let verifier = postgres_protocol::password::scram_sha_256(role.password.expose_secret().as_bytes());
            let verb = if existing.contains(&role.user) { "ALTER" } else { "CREATE" };
            sql.push(format!(
                "{verb} ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD {}",
                quote_ident(&role.user),
                quote_literal(&verifier)
            ));
        }
        // `ALTER DEFAULT PRIVILEGES FOR ROLE <ddl>` needs membership of it (RDS masters are no superusers).
        for role in roles.iter().filter(|role| role.level == Level::Ddl) {
            sql.push(format!("GRANT {} TO CURRENT_USER", quote_ident(&role.user)));
        }
        sql.push("COMMIT".into());
        counters.sent(sql.len());
        match master.batch_execute(&sql.join(";\n")).await {
            Ok(()) => return Ok(()),
            Err(error) => {
                // The transaction is aborted or gone; make sure it is closed.
                let _ = master.batch_execute("ROLLBACK").await; // safe: only ends a failed transaction
                last = describe(&error).context("creating roles");
                if !is_concurrent_update(&error) {
                    return Err(last);
                }
                tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
            }
        }
    }
    Err(last)
}

/// The grants of one role in one database, for the schemas given.
pub fn grant_statements(db: &str, schemas: &[String], role: &RoleSpec, master: &str, ddl: Option<&str>) -> Vec<String> {
    let grantee = quote_ident(&role.user);
    let (tables, sequences, schema, functions) = match role.level {
        Level::Ro => ("SELECT", "SELECT", "USAGE", false),
        Level::Rw => ("SELECT, INSERT, UPDATE, DELETE", "USAGE, SELECT, UPDATE", "USAGE", true),
        Level::Ddl => {
            ("SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER", "USAGE, SELECT, UPDATE", "USAGE, CREATE", true)
        }
    };
    let mut sql = vec![format!("GRANT CONNECT ON DATABASE {} TO {grantee}", quote_ident(db))];
    // Objects created later by the master user or the ddl role are covered too.
    let owners: Vec<&str> = std::iter::once(master).chain(ddl).filter(|owner| *owner != role.user).collect();
    for name in schemas {
        let s = quote_ident(name);
        sql.push(format!("GRANT {schema} ON SCHEMA {s} TO {grantee}"));
        sql.push(format!("GRANT {tables} ON ALL TABLES IN SCHEMA {s} TO {grantee}"));
        sql.push(format!("GRANT {sequences} ON ALL SEQUENCES IN SCHEMA {s} TO {grantee}"));
        if functions {
            sql.push(format!("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {s} TO {grantee}"));
        }
        for owner in &owners {
            let prefix = format!("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {s} GRANT", quote_ident(owner));
            sql.push(format!("{prefix} {tables} ON TABLES TO {grantee}"));
            sql.push(format!("{prefix} {sequences} ON SEQUENCES TO {grantee}"));
            if functions {
                sql.push(format!("{prefix} EXECUTE ON FUNCTIONS TO {grantee}"));
            }
        }
    }
    sql
}

/// One database: one connection, one transaction, a savepoint per role.
async fn provision_database(target: &Target, db: &str, roles: &[RoleSpec], counters: &Counters) -> Vec<Result<(), DbError>> {
    let client = match connect(target, &target.master_user, &target.master_password, db).await {
        Ok(client) => client,
        Err(error) => return roles.iter().map(|_| Err(error.clone())).collect(),
    };
    counters.connection();
    let mut last = Vec::new();
    for attempt in 0..ATTEMPTS {
        match provision_database_once(&client, target, db, roles, counters).await {
            Ok(results) => return results,
            Err((error, retry)) => {
                let _ = client.batch_execute("ROLLBACK").await; // safe: only ends a failed transaction
                last = roles.iter().map(|_| Err(error.clone())).collect();
                if !retry || attempt + 1 == ATTEMPTS {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
            }
        }
    }
    last
}

async fn provision_database_once(
    client: &Client,
    target: &Target,
    db: &str,
    roles: &[RoleSpec],
    counters: &Counters,
) -> Result<Vec<Result<(), DbError>>, (DbError, bool)> {
    let schemas: Vec<String> = client
        .query(
            "SELECT nspname::text FROM pg_namespace \
             WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') \
             AND nspname NOT LIKE 'pg\\_temp\\_%' AND nspname NOT LIKE 'pg\\_toast\\_temp\\_%' ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| (describe(&e).context("listing schemas"), is_concurrent_update(&e)))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    counters.sent(1);
    let ddl = roles.iter().find(|role| role.level == Level::Ddl).map(|role| role.user.as_str());
    let mut results = Vec::new();
    for (i, role) in roles.iter().enumerate() {
        let mut sql = if i == 0 { vec!["BEGIN".to_string()] } else { Vec::new() };
        sql.push("SAVEPOINT dbroles_role".into());
        sql.extend(grant_statements(db, &schemas, role, &target.master_user, ddl));
        sql.push("RELEASE SAVEPOINT dbroles_role".into());
        counters.sent(sql.len());
        match client.batch_execute(&sql.join(";\n")).await {
            Ok(()) => results.push(Ok(())),
            Err(error) if is_concurrent_update(&error) => return Err((describe(&error), true)),
            Err(error) => {
                if i == 0 && error.as_db_error().is_none() {
                    return Err((describe(&error), false));
                }
                counters.sent(2);
                client
                    .batch_execute("ROLLBACK TO SAVEPOINT dbroles_role; RELEASE SAVEPOINT dbroles_role")
                    .await
                    .map_err(|e| (describe(&e), false))?;
                results.push(Err(describe(&error)));
            }
        }
    }
    counters.sent(1);
    client.batch_execute("COMMIT").await.map_err(|e| (describe(&e), is_concurrent_update(&e)))?;
    Ok(results)
}

pub async fn check_login(target: &Target, user: &str, password: &SecretString) -> Result<(), DbError> {
    let client = connect(target, user, password, "postgres").await?;
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

    #[test]
    fn ro_gets_no_write_privilege() {
        let role = RoleSpec::new("p", Level::Ro);
        let sql = grant_statements("db", &["public".into()], &role, "master", Some("p_ddl")).join(";");
        assert!(sql.contains("GRANT SELECT ON ALL TABLES IN SCHEMA \"public\" TO \"p_ro\""));
        assert!(!sql.contains("INSERT") && !sql.contains("CREATE"));
        assert!(sql.contains("FOR ROLE \"p_ddl\""));
    }
}
