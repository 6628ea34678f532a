//! `dbroles-bench`: the figures in the README, printed as one table. A binary of
//! its own, so the `dbroles` CLI links neither the benchmark's SDKs nor its zip code.
//!
//! - each Lambda's release binary and its zip (`--binaries`);
//! - init time: process start until the function asks a local Lambda Runtime API
//!   emulator for its first event (median of 20 cold starts);
//! - warm API handler latency on the embedded store;
//! - provisioning a generated instance on the local PostgreSQL and MariaDB;
//! - a fleet job over 16 PostgreSQL clusters at `max_concurrency` 1, 4 and 8;
//! - the cost of 1,000 jobs, from one real run against moto (`--moto`).

mod cost;
mod fleet;
mod functions;
mod handlers;
mod provisioning;
mod reference;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use dbroles_core::config::Settings;
use dbroles_core::engine::TlsConfig;

/// Provision a generated instance on the local PostgreSQL and MariaDB, and print figures.
#[derive(Parser)]
#[command(name = "dbroles-bench")]
struct Options {
    #[arg(long, default_value_t = 10)]
    databases: usize,
    #[arg(long, default_value_t = 5)]
    schemas: usize,
    #[arg(long, default_value_t = 20)]
    tables: usize,
    /// Where the release binaries are (`dbroles-api`, `dbroles-events`, `dbroles-step`), for their sizes and init times.
    #[arg(long)]
    binaries: Option<PathBuf>,
    /// `scripts/package`'s output (`.aws-sam/build`), for the sizes and init times of what would be deployed.
    #[arg(long)]
    packaged: Option<PathBuf>,
    /// The databases of the instances dbroles is measured on beside the reference pattern.
    #[arg(long, value_delimiter = ',', default_values_t = [10, 50])]
    reference_databases: Vec<usize>,
    /// A moto server, for the cost of a real job.
    #[arg(long)]
    moto: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = Options::parse();
    let settings = Settings { role_prefix: "hoop".into(), tls: TlsConfig::disabled(), ..Settings::default() };
    match run(&settings, &options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("dbroles-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// One line of the table.
struct Row {
    what: String,
    figure: String,
    target: &'static str,
}

impl Row {
    fn new(what: impl Into<String>, figure: impl Into<String>, target: &'static str) -> Self {
        Self { what: what.into(), figure: figure.into(), target }
    }
}

async fn run(settings: &Settings, options: &Options) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    if let Some(dir) = &options.binaries {
        functions::run(dir, &mut rows).await?;
    }
    if let Some(dir) = &options.packaged {
        functions::run_packaged(dir, &mut rows).await?;
    }
    handlers::run(&mut rows).await?;
    provisioning::run(settings, options.databases, options.schemas, options.tables, &mut rows).await?;
    reference::run(settings, &options.reference_databases, options.schemas, options.tables, &mut rows).await?;
    fleet::run(settings, &mut rows).await?;
    if let Some(moto) = &options.moto {
        cost::run(moto, &mut rows).await?;
    }
    println!("| measure | figure | target |");
    println!("| --- | --- | --- |");
    for row in rows {
        println!("| {} | {} | {} |", row.what, row.figure, row.target);
    }
    Ok(())
}

fn millis(duration: Duration) -> String {
    match duration.as_secs_f64() * 1000.0 {
        ms if ms < 10.0 => format!("{ms:.1} ms"),
        ms => format!("{ms:.0} ms"),
    }
}

/// The value at quantile `q` (0..=1) of sorted samples.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}
