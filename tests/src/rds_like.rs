//! A server of the test's own with the master RDS gives: PostgreSQL (15 or 17)
//! or MariaDB, and a database `app` the master made.

use dbroles_core::engine::{Family, Target};
use dbroles_core::secrets::RoleCredentials;
use mysql_async::prelude::Queryable;
use secrecy::ExposeSecret;

use crate::postgres::PgVersion;
use crate::{target, MariaDbServer, PgCluster};

/// A server of the test's own with an RDS-like master, and a database `app`
/// whose table `items` (one row) the master made.
pub enum RdsLike {
    Postgres(PgCluster),
    MariaDb(MariaDbServer),
}

impl RdsLike {
    pub async fn postgres(version: PgVersion) -> (Self, Target) {
        let cluster = PgCluster::start_version(version, &["127.0.0.1", "localhost"]);
        let password = cluster.rds_like().await;
        let target = target(Family::Postgres, cluster.port, "master", password);
        (RdsLike::Postgres(cluster), target)
    }

    pub async fn mariadb() -> (Self, Target) {
        let server = MariaDbServer::start_for(&["127.0.0.1"]).await;
        let password = server.rds_like_master("master").await;
        let mut master = server.connect("master", password).await.expect("the master logs in");
        master
            .query_drop("CREATE DATABASE app; CREATE TABLE app.items (id int); INSERT INTO app.items VALUES (1)")
            .await
            .expect("the master makes app.items");
        let target = target(Family::MySql, server.port, "master", password);
        (RdsLike::MariaDb(server), target)
    }

    /// Runs `sql` as a login, in `app`; the server's message if it is refused.
    pub async fn run_as(&self, user: &str, password: &str, sql: &str) -> Result<(), String> {
        match self {
            RdsLike::Postgres(cluster) => {
                let client = cluster.client(user, password, "app").await.map_err(|e| e.to_string())?;
                client.batch_execute(sql).await.map_err(|e| e.as_db_error().map_or(e.to_string(), |db| db.message().into()))
            }
            RdsLike::MariaDb(server) => {
                let mut conn = server.connect(user, password).await.map_err(|e| e.to_string())?;
                conn.query_drop(format!("USE app; {sql}")).await.map_err(|e| e.to_string())?;
                conn.disconnect().await.map_err(|e| e.to_string())
            }
        }
    }

    pub async fn logs_in(&self, credentials: &RoleCredentials) -> bool {
        self.run_as(&credentials.user, credentials.password.expose_secret(), "SELECT 1").await.is_ok()
    }

    /// Makes the database `name` with a table `t` (one row), as its master would after a run.
    pub async fn add_database(&self, target: &Target, name: &str) {
        let password = target.master_password.expose_secret();
        match self {
            RdsLike::Postgres(cluster) => {
                let master = cluster.client("master", password, "postgres").await.unwrap();
                master.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
                let created = cluster.client("master", password, name).await.unwrap();
                created.batch_execute("CREATE TABLE public.t (id int); INSERT INTO public.t VALUES (1)").await.unwrap();
            }
            RdsLike::MariaDb(server) => {
                let mut master = server.connect("master", password).await.unwrap();
                let sql = format!("CREATE DATABASE {name}; CREATE TABLE {name}.t (id int); INSERT INTO {name}.t VALUES (1)");
                master.query_drop(sql).await.unwrap();
            }
        }
    }

    /// The roles (users) whose names start with `<prefix>_`, as the server's administrator sees them.
    pub async fn roles_of(&self, prefix: &str) -> Vec<String> {
        let pattern = format!("{prefix}\\_%");
        match self {
            RdsLike::Postgres(cluster) => {
                let su = cluster.superuser("postgres").await;
                let rows = su.query("SELECT rolname::text FROM pg_roles WHERE rolname LIKE $1", &[&pattern]).await.unwrap();
                rows.iter().map(|row| row.get(0)).collect()
            }
            RdsLike::MariaDb(server) => {
                let mut root = server.connect("root", "").await.unwrap();
                root.exec("SELECT user FROM mysql.user WHERE user LIKE ?", (pattern,)).await.unwrap()
            }
        }
    }

    /// The owner of `public.<table>` in `app` (PostgreSQL).
    pub async fn owner(&self, table: &str) -> String {
        let RdsLike::Postgres(cluster) = self else { unreachable!("MariaDB tables have no owner") };
        let su = cluster.superuser("app").await;
        let row = su.query_one("SELECT tableowner::text FROM pg_tables WHERE tablename = $1", &[&table]).await.unwrap();
        row.get(0)
    }
}
