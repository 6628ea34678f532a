//! What a test makes on the machine's shared PostgreSQL (5432) and MariaDB
//! (3306) is removed when its [`Leaves`] guard is dropped: when the test ends,
//! passed or failed, so the shared servers stay as the test found them.

use mysql_async::prelude::Queryable;

use crate::mariadb::mariadb;
use crate::postgres::pg_connect;

/// The role prefixes (their roles and users, and the MariaDB databases named
/// after them) and the MariaDB users a test makes on the shared servers.
#[derive(Clone, Debug, Default)]
pub struct Leaves {
    prefixes: Vec<String>,
    users: Vec<String>,
}

impl Leaves {
    pub fn new() -> Self {
        Self::default()
    }

    /// The roles `<prefix>_*` on both servers.
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefixes.push(prefix.to_string());
        self
    }

    /// A MariaDB user (`user@'%'`), an RDS-like master say.
    pub fn user(mut self, user: &str) -> Self {
        self.users.push(user.to_string());
        self
    }
}

impl Drop for Leaves {
    fn drop(&mut self) {
        if self.prefixes.is_empty() && self.users.is_empty() {
            return;
        }
        let (prefixes, users) = (std::mem::take(&mut self.prefixes), std::mem::take(&mut self.users));
        // A drop may run inside the test's runtime, which cannot be blocked on: a runtime of its own.
        let cleaning = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            runtime.block_on(remove(&prefixes, &users));
        });
        if cleaning.join().is_err() {
            eprintln!("dbroles-tests: the shared servers could not be cleaned");
        }
    }
}

async fn remove(prefixes: &[String], users: &[String]) {
    for prefix in prefixes {
        if let Err(error) = remove_postgres_roles(prefix).await {
            eprintln!("dbroles-tests: dropping the roles {prefix}_* on the machine's PostgreSQL: {error}");
        }
    }
    if let Err(error) = remove_mariadb_users(prefixes, users).await {
        eprintln!("dbroles-tests: dropping users on the machine's MariaDB: {error}");
    }
}

async fn remove_mariadb_users(prefixes: &[String], users: &[String]) -> Result<(), mysql_async::Error> {
    let mut root = mariadb("root", "").await?;
    let mut users = users.to_vec();
    for prefix in prefixes {
        let pattern = format!("{}\\_%", prefix.replace('_', "\\_"));
        let found: Vec<String> = root.exec("SELECT user FROM mysql.user WHERE user LIKE ? AND host = '%'", (pattern,)).await?;
        users.extend(found);
    }
    for user in users {
        root.query_drop(format!("DROP USER IF EXISTS '{}'@'%'", user.replace('\'', "''"))).await?;
    }
    // The databases a test named after its (unique) prefix.
    for prefix in prefixes {
        let pattern = format!("{}%", prefix.replace('_', "\\_"));
        let databases: Vec<String> =
            root.exec("SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE ?", (pattern,)).await?;
        for database in databases {
            root.query_drop(format!("DROP DATABASE IF EXISTS `{}`", database.replace('`', "``"))).await?;
        }
    }
    root.disconnect().await
}

/// Drops the roles `<prefix>_*` on the machine's PostgreSQL, with what they own and were granted in every database.
pub(crate) async fn remove_postgres_roles(prefix: &str) -> Result<(), tokio_postgres::Error> {
    let client = pg_connect(5432, "postgres", "", "postgres").await?;
    let pattern = format!("{}\\_%", prefix.replace('_', "\\_"));
    let roles: Vec<String> = client
        .query("SELECT rolname::text FROM pg_roles WHERE rolname LIKE $1", &[&pattern])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if roles.is_empty() {
        return Ok(());
    }
    let databases = client.query("SELECT datname::text FROM pg_database WHERE datallowconn", &[]).await?;
    for db in databases.iter().map(|row| row.get::<_, String>(0)) {
        let owner = pg_connect(5432, "postgres", "", &db).await?;
        for role in &roles {
            owner.batch_execute(&format!("DROP OWNED BY \"{}\"", role.replace('"', "\"\""))).await?;
        }
    }
    for role in &roles {
        client.batch_execute(&format!("DROP ROLE IF EXISTS \"{}\"", role.replace('"', "\"\""))).await?;
    }
    Ok(())
}

/// Drops the roles `<prefix>_*` a test made on the machine's PostgreSQL, with their grants in every database.
pub async fn drop_machine_roles(prefix: &str) {
    remove_postgres_roles(prefix).await.expect("the machine's PostgreSQL drops the test's roles");
}
