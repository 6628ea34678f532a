//! MySQL and MariaDB (`mysql`, `mariadb`, `aurora-mysql`).
//!
//! Users are created with `CREATE USER IF NOT EXISTS` and their password set with
//! `ALTER USER`, never dropped, so open sessions survive a rotation. Grants are
//! per database on every non-system schema, never `ON *.*`.
//!
//! The statements work on MariaDB 10.3+ and MySQL 5.7+/8. Where they differ:
//! MySQL 8 has no portable way to send a pre-hashed password (its default
//! plugin, `caching_sha2_password`, takes only plaintext, and the
//! `mysql_native_password` hash form is gone in 8.4), so the password travels
//! in `IDENTIFIED BY` over the (TLS) connection; both servers redact it in their
//! logs. Passwords come from a fixed alphabet with no quote or backslash, and
//! are still escaped.

use std::sync::Arc;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, SslOpts};
use secrecy::{ExposeSecret, SecretString};

use super::{limited, Counters, DbError, EngineError, Level, Report, RoleOutcome, RoleSpec, Target, TlsMode};

/// Schemas that are never granted.
pub const SYSTEM_SCHEMAS: [&str; 5] = ["mysql", "sys", "performance_schema", "information_schema", "rdsadmin"];

/// `` `name` `` with backticks doubled.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A database name in a `GRANT ... ON db.*`: there `_` and `%` are wildcards and must be escaped.
pub fn quote_grant_db(name: &str) -> String {
    let escaped = name.replace('\\', "\\\\").replace('_', "\\_").replace('%', "\\%");
    quote_ident(&escaped)
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
        .wait_timeout(Some(target.statement_timeout.as_secs().max(1) as usize));
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

/// The privileges of each level on a database.
pub fn privileges(level: Level) -> &'static str {
    match level {
        Level::Ro => "SELECT, SHOW VIEW",
        Level::Rw => "SELECT, SHOW VIEW, INSERT, UPDATE, DELETE, EXECUTE",
        Level::Ddl => {
            "SELECT, SHOW VIEW, INSERT, UPDATE, DELETE, EXECUTE, CREATE, ALTER, DROP, INDEX, REFERENCES, CREATE VIEW, TRIGGER"
        }
    }
}

pub async fn provision(target: &Target, roles: &[RoleSpec]) -> Result<Report, EngineError> {
    let counters = Arc::new(Counters::default());
    let mut conn = connect(target, &target.master_user, &target.master_password)
        .await
        .map_err(|source| EngineError::Connect { target: target.describe(), source })?;
    counters.connection();
    let databases: Vec<String> = conn
        .query::<String, _>("SELECT schema_name FROM information_schema.schemata ORDER BY schema_name")
        .await
        .map_err(|e| EngineError::Failed(DbError::from_mysql(&e).context(format!("listing databases on {}", target.describe()))))?
        .into_iter()
        .filter(|name| !SYSTEM_SCHEMAS.contains(&name.to_ascii_lowercase().as_str()))
        .collect();
    counters.sent(1);
    let mut outcomes = Vec::new();
    for role in roles {
        // One round trip per role: the user, its password, then its grants.
        let mut sql = vec![
            format!(
                "CREATE USER IF NOT EXISTS {} IDENTIFIED BY {}",
                account(&role.user),
                quote_literal(role.password.expose_secret())
            ),
            format!("ALTER USER {} IDENTIFIED BY {}", account(&role.user), quote_literal(role.password.expose_secret())),
        ];
        for db in &databases {
            sql.push(format!("GRANT {} ON {}.* TO {}", privileges(role.level), quote_grant_db(db), account(&role.user)));
        }
        let result = run(&mut conn, target, &sql, &counters).await.map_err(|e| e.context(&role.user));
        outcomes.push(RoleOutcome { level: role.level, user: role.user.clone(), result });
    }
    // The connection is dropped here; mysql_async closes it in the background.
    let _ = conn.disconnect().await; // safe: the work is committed; a failed goodbye changes nothing
    Ok(counters.into_report(outcomes, databases))
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
