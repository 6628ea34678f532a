//! dbroles beside the reference product's pattern, on the same generated
//! PostgreSQL instance in the same run: a first run, then rotations, each with
//! its wall time, the most connections open at once, and its statements and
//! round trips. The pattern: a new connection per role per database, each
//! sending one batch: a DO block that creates or alters the role with its new
//! password, then its level's grants on every schema (`GRANT … ON ALL TABLES`
//! and the default privileges). Figures are medians of the rounds; the ratios
//! compare two sides measured in one run, which survives a noisy machine
//! better than either time.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use dbroles_core::config::Settings;
use dbroles_core::engine::{password, Family, Level, Target};
use dbroles_core::provision::{provision_roles, Endpoint, Options};
use dbroles_core::secrets::database::DatabaseSecrets;
use dbroles_core::secrets::SecretRef;
use dbroles_core::store::sqlite::SqliteStore;
use secrecy::{ExposeSecret, SecretString};

use super::provisioning::{client_connections, databases, drop_roles, pg, setup_postgres, teardown_postgres};
use super::{millis, Row};

/// Rotations after the first run, each side.
const ROTATIONS: usize = 2;
/// The reference pattern's roles (dbroles' are `dbroles_bench_*`).
const REFERENCE_PREFIX: &str = "reference_bench";

/// One side's run: how long, the most connections at once, statements and round trips.
#[derive(Clone, Copy, Default)]
struct Run {
    elapsed: Duration,
    /// Connections opened.
    connections: usize,
    /// The most client connections open on the server at once.
    peak: usize,
    statements: usize,
    round_trips: usize,
    /// Databases provisioned (dbroles' side).
    databases: usize,
}

impl Run {
    fn describe(&self) -> String {
        format!(
            "{}, {} connections ({} at once), {} statements, {} round trips",
            millis(self.elapsed),
            self.connections,
            self.peak,
            self.statements,
            self.round_trips
        )
    }
}

pub async fn run(settings: &Settings, sizes: &[usize], schemas: usize, tables: usize, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    for &databases in sizes {
        setup_postgres(databases, schemas, tables).await.context("generating the PostgreSQL instance")?;
        let measured = side_by_side(settings).await;
        teardown_postgres(databases).await?;
        drop_roles(REFERENCE_PREFIX).await?;
        let (dbroles, reference, sequential) = measured?;
        let shape = format!("{databases} db x {schemas} schemas x {tables} tables");
        for (what, ours, theirs) in [("first run", dbroles[0], reference[0]), ("rotation", dbroles[1], reference[1])] {
            let ratio = theirs.elapsed.as_secs_f64() / ours.elapsed.as_secs_f64().max(1e-9);
            rows.push(Row::new(
                format!("PostgreSQL {shape}, {what}: dbroles / the reference pattern"),
                format!("{} / {}; the pattern takes {ratio:.1}x as long", ours.describe(), theirs.describe()),
                "",
            ));
        }
        rows.push(bounded_row(&shape, settings.max_db_connections, dbroles[1], sequential));
    }
    Ok(())
}

/// A rotation at the bound beside one at a bound of one (one connection at a
/// time), per database: the sequential time divided by the bound is the target.
fn bounded_row(shape: &str, bound: usize, ours: Run, sequential: Run) -> Row {
    let per = |run: Run| run.elapsed.as_secs_f64() * 1000.0 / run.databases.max(1) as f64;
    let (at_bound, alone) = (per(ours), per(sequential));
    Row::new(
        format!("PostgreSQL {shape}, rotation per database: max_db_connections {bound} / 1 (sequential)"),
        format!(
            "{at_bound:.1} ms ({} at once) / {alone:.1} ms ({} at once); {:.1}x faster than sequential",
            ours.peak,
            sequential.peak,
            alone / at_bound.max(1e-9)
        ),
        "sequential / the bound",
    )
}

/// dbroles' first run and median rotation, then the pattern's, on the same
/// instance; and a rotation of dbroles at a bound of one connection.
async fn side_by_side(settings: &Settings) -> anyhow::Result<([Run; 2], [Run; 2], Run)> {
    let dir = tempfile::tempdir()?;
    let secrets = DatabaseSecrets::new(Arc::new(SqliteStore::open(&dir.path().join("bench.db"))?));
    let mut ours = Vec::new();
    for _ in 0..=ROTATIONS {
        ours.push(sampled(dbroles_run(settings, &secrets)).await?);
    }
    let one_at_a_time = Settings { max_db_connections: 1, ..settings.clone() };
    let sequential = sampled(dbroles_run(&one_at_a_time, &secrets)).await?;
    let names = databases().await?;
    let mut theirs = Vec::new();
    for _ in 0..=ROTATIONS {
        theirs.push(sampled(reference_run(&names)).await?);
    }
    Ok(([ours[0], median(&ours[1..])], [theirs[0], median(&theirs[1..])], sequential))
}

fn median(runs: &[Run]) -> Run {
    let mut sorted = runs.to_vec();
    sorted.sort_by_key(|run| run.elapsed);
    sorted[sorted.len() / 2]
}

/// Runs `work` while another connection samples how many client connections are open.
async fn sampled(work: impl std::future::Future<Output = anyhow::Result<Run>>) -> anyhow::Result<Run> {
    let sampler = pg("postgres").await?;
    let (peak, done) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let sampling = {
        let (peak, done) = (peak.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if let Ok(open) = client_connections(&sampler).await {
                    peak.fetch_max(open, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let run = work.await;
    done.store(true, Ordering::Relaxed);
    sampling.await?;
    Ok(Run { peak: peak.load(Ordering::Relaxed), ..run? })
}

async fn dbroles_run(settings: &Settings, secrets: &DatabaseSecrets) -> anyhow::Result<Run> {
    let target = Target {
        family: Family::Postgres,
        host: "127.0.0.1".into(),
        port: 5432,
        master_user: "postgres".into(),
        master_password: SecretString::from(""),
        tls: dbroles_core::engine::TlsConfig::disabled(),
        connect_timeout: settings.connect_timeout,
        statement_timeout: settings.statement_timeout,
        max_connections: settings.max_db_connections,
    };
    let endpoint = Endpoint { host: "127.0.0.1".into(), port: 5432, db: String::new(), engine: "postgres".into() };
    let secret = SecretRef {
        org: "bench".into(),
        instance_id: "bench-reference".into(),
        instance_arn: "arn:aws:rds:us-east-1:000000000000:db:bench-reference".into(),
        job_id: "bench".into(),
        user: String::new(),
        host: "127.0.0.1".into(),
    };
    let started = Instant::now();
    let outcome = provision_roles(&target, &endpoint, "dbroles_bench", secrets, &secret, Options::adopting(true)).await?;
    let elapsed = started.elapsed();
    anyhow::ensure!(
        outcome.all_completed(),
        "a role failed: {:?}",
        outcome.results.iter().map(|r| &r.message).collect::<Vec<_>>()
    );
    let report = outcome.report;
    Ok(Run {
        elapsed,
        connections: report.connections,
        peak: 0,
        statements: report.statements,
        round_trips: report.round_trips,
        databases: report.databases.len(),
    })
}

/// The pattern: per database and role, a connection of its own and one batch.
async fn reference_run(databases: &[String]) -> anyhow::Result<Run> {
    let started = Instant::now();
    let (mut statements, mut round_trips) = (0, 0);
    for database in databases {
        let mut schemas: Option<Vec<String>> = None;
        for level in Level::ALL {
            let client = pg(database).await?;
            if schemas.is_none() {
                let listed = client
                    .query(
                        "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'",
                        &[],
                    )
                    .await?;
                schemas = Some(listed.iter().map(|row| row.get(0)).collect());
                (statements, round_trips) = (statements + 1, round_trips + 1);
            }
            let batch = reference_batch(database, schemas.as_deref().unwrap_or_default(), level);
            client.batch_execute(&batch.join(";\n")).await.with_context(|| format!("the pattern in {database}"))?;
            (statements, round_trips) = (statements + batch.len(), round_trips + 1);
        }
    }
    let connections = databases.len() * Level::ALL.len();
    Ok(Run { elapsed: started.elapsed(), connections, peak: 0, statements, round_trips, databases: databases.len() })
}

/// One role's batch in one database: create or alter it, then its level's grants.
fn reference_batch(database: &str, schemas: &[String], level: Level) -> Vec<String> {
    let role = level.user(REFERENCE_PREFIX);
    let password = password::generate();
    let password = password.expose_secret();
    let mut batch = vec![format!(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN \
         CREATE ROLE {role} LOGIN PASSWORD '{password}'; ELSE ALTER ROLE {role} LOGIN PASSWORD '{password}'; END IF; END $$"
    )];
    batch.push(format!("GRANT CONNECT ON DATABASE \"{database}\" TO {role}"));
    let (tables, schema) = match level {
        Level::Ro => ("SELECT", "USAGE"),
        Level::Rw => ("SELECT, INSERT, UPDATE, DELETE", "USAGE"),
        Level::Ddl => ("ALL", "USAGE, CREATE"),
    };
    for name in schemas {
        batch.push(format!("GRANT {schema} ON SCHEMA \"{name}\" TO {role}"));
        batch.push(format!("GRANT {tables} ON ALL TABLES IN SCHEMA \"{name}\" TO {role}"));
        batch.push(format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA \"{name}\" TO {role}"));
        batch.push(format!("ALTER DEFAULT PRIVILEGES IN SCHEMA \"{name}\" GRANT {tables} ON TABLES TO {role}"));
    }
    batch
}
