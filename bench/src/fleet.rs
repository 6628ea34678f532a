//! A fleet job on the local executor: 16 PostgreSQL clusters of the bench's own
//! (each a database server with its own roles, as RDS instances are), provisioned
//! by one fleet job at `max_concurrency` 1, 4 and 8. Per run: instances per
//! minute, and the most client connections open on the clusters at once (sampled
//! from `pg_stat_activity`). Once: the state transitions per instance, fleet,
//! Map item and job executions counted, and what 1,000 instances cost in Step
//! Functions (Standard: $0.025 per 1,000 transitions).

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use dbroles_core::config::Settings;
use dbroles_core::deps::App;
use dbroles_core::executor::Local;
use dbroles_core::executor::{Executor, Progress};
use dbroles_core::inventory::local::{LocalInstance, LocalInventory};
use dbroles_core::lifecycle::fleet;
use dbroles_core::model::account::AccountPolicy;
use dbroles_core::model::fleet::CreateFleetJobRequest;
use dbroles_core::model::job::Phase;
use dbroles_core::store::sqlite::SqliteStore;

use super::provisioning::client_connections;
use super::Row;

const INSTANCES: usize = 16;
const CONCURRENCY: [u32; 3] = [1, 4, 8];
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// Step Functions Standard, us-east-1: per state transition.
const PER_TRANSITION: f64 = 0.025 / 1000.0;
const ORG: &str = "bench";

/// A PostgreSQL cluster of the bench's own on a free port (trust auth), stopped when dropped.
struct Cluster {
    port: u16,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

fn as_postgres(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("runuser").args(["-u", "postgres", "--"]).args(args).output()?;
    if !out.status.success() {
        bail!("{}: {}", args[0], String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

impl Cluster {
    fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("dbroles-bench-pg").tempdir()?;
        Command::new("chown").args(["postgres:postgres"]).arg(dir.path()).status()?;
        let data = dir.path().join("data");
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        as_postgres(&[&format!("{PG_BIN}/initdb"), "-D", data.to_str().unwrap(), "-U", "postgres", "-A", "trust"])?;
        let options = format!(
            "-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c max_connections=100",
            dir.path().display()
        );
        let log = dir.path().join("server.log");
        as_postgres(&[
            &format!("{PG_BIN}/pg_ctl"),
            "-D",
            data.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-o",
            &options,
            "-w",
            "start",
        ])?;
        Ok(Self { port, data, _dir: dir })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_postgres(&[&format!("{PG_BIN}/pg_ctl"), "-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"]);
    }
}

async fn connect(port: u16) -> anyhow::Result<tokio_postgres::Client> {
    let config = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
    let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

pub async fn run(settings: &Settings, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let clusters: Vec<Cluster> =
        (0..INSTANCES).map(|_| Cluster::start()).collect::<anyhow::Result<_>>().context("starting the clusters")?;
    let dir = tempfile::tempdir()?;
    let transitions = Arc::new(AtomicUsize::new(0));
    let app = local_app(&clusters, &dir, settings, transitions.clone())?;
    let samplers = samplers(clusters.iter().map(|c| c.port)).await?;
    for concurrency in CONCURRENCY {
        transitions.store(0, Ordering::Relaxed);
        let (elapsed, peak) = timed_fleet(&app, &samplers, concurrency).await?;
        let per_minute = INSTANCES as f64 / elapsed.as_secs_f64() * 60.0;
        rows.push(Row::new(
            format!("fleet of {INSTANCES} PostgreSQL instances, max_concurrency {concurrency}"),
            format!(
                "{per_minute:.0} instances/min ({:.1} s); at most {peak} database {} at once",
                elapsed.as_secs_f64(),
                if peak == 1 { "connection" } else { "connections" }
            ),
            "",
        ));
        if concurrency == *CONCURRENCY.last().unwrap() {
            let per_instance = transitions.load(Ordering::Relaxed) as f64 / INSTANCES as f64;
            rows.push(Row::new(
                "fleet: Step Functions per 1,000 instances (fleet, Map items and jobs)",
                format!("{:.0} transitions, ${:.2}", per_instance * 1000.0, per_instance * 1000.0 * PER_TRANSITION),
                "",
            ));
        }
    }
    Ok(())
}

/// The local deployment over `clusters`, counting the state transitions of its executions in `transitions`.
fn local_app(
    clusters: &[Cluster],
    dir: &tempfile::TempDir,
    settings: &Settings,
    transitions: Arc<AtomicUsize>,
) -> anyhow::Result<App> {
    let instances = clusters
        .iter()
        .enumerate()
        .map(|(i, cluster)| {
            let arn = format!("arn:aws:rds:us-east-1:000000000000:db:fleet-{i:02}");
            LocalInstance::on_loopback(&arn, "postgres", cluster.port, "postgres").tagged_for(ORG)
        })
        .collect();
    let store = Arc::new(SqliteStore::open(&dir.path().join("bench.db"))?);
    let accounts = AccountPolicy { home_orgs: vec![ORG.into()], role_name: None, ..Default::default() };
    let settings = Settings { accounts, ..settings.clone() };
    let deps = dbroles_core::wiring::local(store, Arc::new(LocalInventory::new(instances)?), settings);
    let reporter = Arc::new(move |progress: Progress<'_>| {
        if let Progress::Entered(_) = progress {
            transitions.fetch_add(1, Ordering::Relaxed);
        }
    });
    Ok(App::new(&deps, Arc::new(Local::new(Executor::provision(0.01), deps.clone()).reporting(reporter))))
}

/// One fleet job over every instance at `concurrency`, run to its end: how long
/// it took, and the most connections open on the clusters at once.
async fn timed_fleet(app: &App, samplers: &[tokio_postgres::Client], concurrency: u32) -> anyhow::Result<(Duration, usize)> {
    let request: CreateFleetJobRequest = serde_json::from_value(serde_json::json!({
        "selector": {},
        "agent_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
        "max_concurrency": concurrency,
    }))?;
    let started = Instant::now();
    let id = fleet::start(app, ORG, "bench", request).await?;
    let mut peak = 0;
    let finished = loop {
        let mut open = 0;
        for sampler in samplers {
            open += client_connections(sampler).await?;
        }
        peak = peak.max(open);
        let fleet = fleet::find(app.deps.fleets.as_ref(), app.deps.jobs.as_ref(), ORG, &id).await?;
        if fleet.status.phase != Phase::Running {
            break fleet;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let elapsed = started.elapsed();
    if finished.status.counts.completed as usize != INSTANCES {
        bail!("the fleet job at max_concurrency {concurrency} did not complete every instance: {:?}", finished.status);
    }
    Ok((elapsed, peak))
}

/// One connection to each cluster, to sample its others.
async fn samplers(ports: impl Iterator<Item = u16>) -> anyhow::Result<Vec<tokio_postgres::Client>> {
    let mut clients = Vec::new();
    for port in ports {
        clients.push(connect(port).await?);
    }
    Ok(clients)
}
