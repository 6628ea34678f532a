//! Provisioning a generated instance on the local PostgreSQL and MariaDB: the
//! time per job, connections, statements and round trips.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use dbroles_core::config::Settings;
use dbroles_core::engine::{Family, Level, Target};
use dbroles_core::model::request::Mode;
use dbroles_core::provision::{plan_roles, provision_roles, Endpoint, Options};
use dbroles_core::secrets::database::DatabaseSecrets;
use dbroles_core::secrets::SecretRef;
use dbroles_core::store::sqlite::SqliteStore;
use mysql_async::prelude::Queryable;
use secrecy::SecretString;

use super::{millis, Row};

const RUNS: usize = 5;

pub async fn run(
    settings: &Settings,
    databases: usize,
    schemas: usize,
    tables: usize,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let secrets = DatabaseSecrets::new(Arc::new(SqliteStore::open(&dir.path().join("bench.db"))?));
    let shape = format!("{databases} db x {schemas} schemas x {tables} tables");

    setup_postgres(databases, schemas, tables).await.context("generating the PostgreSQL instance")?;
    let pg = measure(settings, &secrets, Family::Postgres, 5432, "postgres", "postgres").await;
    teardown_postgres(databases).await?;
    let (run, plan) = pg?;
    rows.push(Row::new(format!("provision PostgreSQL, {shape}: a first run, then rotations"), run, "< 1 s"));
    rows.push(Row::new(format!("plan PostgreSQL, {shape}, after the runs (median of {RUNS})"), plan, ""));

    // MySQL has no schemas inside a database: the same tables, spread over the databases.
    setup_mariadb(databases, schemas * tables).await.context("generating the MariaDB instance")?;
    let my = measure(settings, &secrets, Family::MySql, 3306, "root", "mariadb").await;
    teardown_mariadb(databases).await?;
    let (run, plan) = my?;
    let shape = format!("{databases} db x {} tables", schemas * tables);
    rows.push(Row::new(format!("provision MariaDB, {shape}: a first run, then rotations"), run, ""));
    rows.push(Row::new(format!("plan MariaDB, {shape}, after the runs (median of {RUNS})"), plan, ""));
    Ok(())
}

/// The runs' median, then the median of plans right after them (which must find
/// nothing to change), and the ratio of the two from the same run.
async fn measure(
    settings: &Settings,
    secrets: &DatabaseSecrets,
    family: Family,
    port: u16,
    user: &str,
    engine: &str,
) -> anyhow::Result<(String, String)> {
    let target = Target {
        family,
        host: "127.0.0.1".into(),
        port,
        master_user: user.into(),
        master_password: SecretString::from(""),
        tls: dbroles_core::engine::TlsConfig::disabled(),
        connect_timeout: settings.connect_timeout,
        statement_timeout: settings.statement_timeout,
        max_connections: settings.max_db_connections,
    };
    let endpoint = Endpoint { host: "127.0.0.1".into(), port, db: String::new(), engine: engine.into() };
    let secret = SecretRef {
        org: "bench".into(),
        instance_id: format!("bench-{engine}"),
        instance_arn: format!("arn:aws:rds:us-east-1:000000000000:db:bench-{engine}"),
        job_id: "bench".into(),
        user: String::new(),
        host: "127.0.0.1".into(),
    };
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..RUNS {
        let started = Instant::now();
        let outcome = provision_roles(&target, &endpoint, "dbroles_bench", secrets, &secret, Options::adopting(true)).await?;
        times.push(started.elapsed());
        anyhow::ensure!(
            outcome.all_completed(),
            "a role failed: {:?}",
            outcome.results.iter().map(|r| &r.message).collect::<Vec<_>>()
        );
        last = Some(outcome.report);
    }
    let first = times.remove(0);
    times.sort();
    let rotation = times[times.len() / 2];
    let report = last.context("no run")?;
    let run = format!(
        "first run {}, rotation {} (median of {}; {} databases; a rotation: connections {}, statements {}, round trips {})",
        millis(first),
        millis(rotation),
        times.len(),
        report.databases.len(),
        report.connections,
        report.statements,
        report.round_trips
    );
    let plans = plan_times(&target, secrets, &secret).await?;
    let ratio = plans.as_secs_f64() / rotation.as_secs_f64();
    Ok((run, format!("{} ({ratio:.2}x a rotation's time, in sync)", millis(plans))))
}

/// The median time of a plan, each of which must find the roles in sync.
async fn plan_times(target: &Target, secrets: &DatabaseSecrets, secret: &SecretRef) -> anyhow::Result<std::time::Duration> {
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        let options = Options { mode: Mode::Plan, ..Options::adopting(true) };
        let outcome = plan_roles(target, "dbroles_bench", secrets, secret, options).await?;
        times.push(started.elapsed());
        let drifted: Vec<&Vec<String>> =
            outcome.results.iter().filter_map(|r| r.changes.as_ref()).filter(|c| !c.is_empty()).collect();
        anyhow::ensure!(outcome.all_completed() && drifted.is_empty(), "a plan after the runs found changes: {drifted:?}");
    }
    times.sort();
    Ok(times[RUNS / 2])
}

pub(super) async fn pg(db: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) =
        tokio_postgres::connect(&format!("host=127.0.0.1 port=5432 user=postgres dbname={db}"), tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

pub(super) async fn setup_postgres(databases: usize, schemas: usize, tables: usize) -> anyhow::Result<()> {
    teardown_postgres(databases).await?;
    let admin = pg("postgres").await?;
    for d in 0..databases {
        admin.batch_execute(&format!("CREATE DATABASE dbroles_bench_{d}")).await?;
        let mut sql = String::new();
        for s in 0..schemas {
            sql += &format!("CREATE SCHEMA s{s};");
            for t in 0..tables {
                sql += &format!("CREATE TABLE s{s}.t{t} (id bigserial PRIMARY KEY, v text);");
            }
        }
        pg(&format!("dbroles_bench_{d}")).await?.batch_execute(&sql).await?;
    }
    Ok(())
}

pub(super) async fn teardown_postgres(databases: usize) -> anyhow::Result<()> {
    let admin = pg("postgres").await?;
    for d in 0..databases {
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS dbroles_bench_{d} WITH (FORCE)")).await?;
    }
    drop_roles("dbroles_bench").await
}

/// The databases of the machine's PostgreSQL that roles are granted in: every
/// one that allows connections but the templates.
pub(super) async fn databases() -> anyhow::Result<Vec<String>> {
    let admin = pg("postgres").await?;
    let rows =
        admin.query("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname", &[]).await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Client connections open on the server `client` is connected to, its own aside.
pub(super) async fn client_connections(client: &tokio_postgres::Client) -> anyhow::Result<usize> {
    let count = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()";
    Ok(client.query_one(count, &[]).await?.get::<_, i64>(0) as usize)
}

/// Drops the roles `<prefix>_ro`, `_rw` and `_ddl` with what they own and were
/// granted in every database, so the shared server is left as it was.
pub(super) async fn drop_roles(prefix: &str) -> anyhow::Result<()> {
    let admin = pg("postgres").await?;
    let roles: Vec<String> = Level::ALL.iter().map(|level| level.user(prefix)).collect();
    let present: i64 = admin.query_one("SELECT count(*) FROM pg_roles WHERE rolname = ANY($1)", &[&roles]).await?.get(0);
    if present == 0 {
        return Ok(());
    }
    for database in databases().await? {
        pg(&database).await?.batch_execute(&format!("DROP OWNED BY {}", roles.join(", "))).await.ok();
    }
    admin.batch_execute(&format!("DROP ROLE IF EXISTS {}", roles.join(", "))).await?;
    Ok(())
}

async fn mariadb() -> anyhow::Result<mysql_async::Conn> {
    let opts =
        mysql_async::OptsBuilder::default().ip_or_hostname("127.0.0.1").tcp_port(3306).user(Some("root")).prefer_socket(false);
    Ok(mysql_async::Conn::new(opts).await?)
}

async fn setup_mariadb(databases: usize, tables: usize) -> anyhow::Result<()> {
    teardown_mariadb(databases).await?;
    let mut conn = mariadb().await?;
    for d in 0..databases {
        let mut sql = format!("CREATE DATABASE dbroles_bench_{d};");
        for t in 0..tables {
            sql += &format!("CREATE TABLE dbroles_bench_{d}.t{t} (id bigint PRIMARY KEY, v text);");
        }
        conn.query_drop(sql).await?;
    }
    Ok(())
}

async fn teardown_mariadb(databases: usize) -> anyhow::Result<()> {
    let mut conn = mariadb().await?;
    for d in 0..databases {
        conn.query_drop(format!("DROP DATABASE IF EXISTS dbroles_bench_{d}")).await?;
    }
    for level in ["ro", "rw", "ddl"] {
        conn.query_drop(format!("DROP USER IF EXISTS 'dbroles_bench_{level}'@'%'")).await?;
    }
    Ok(())
}
