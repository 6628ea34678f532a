//! `dbroles`: run dbroles on a laptop, on an embedded store, against local databases.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use dbroles_core::auth::{LocalTokens, ADMIN_GROUP, AUDITOR_GROUP};
use dbroles_core::config::{LocalConfig, Settings};
use dbroles_core::deps::{App, Deps};
use dbroles_core::engine::{self, Level, TlsConfig};
use dbroles_core::executor::Local;
use dbroles_core::executor::{Executor, Progress};
use dbroles_core::inventory::local::{LocalInventory, LOCAL_POSTGRES_ARN};
use dbroles_core::lifecycle::fleet;
use dbroles_core::lifecycle::jobs;
use dbroles_core::model::account::AccountPolicy;
use dbroles_core::model::fleet::{CreateFleetJobRequest, FleetAwsOptions, Selector, MAX_INSTANCES};
use dbroles_core::model::job::{Job, Phase};
use dbroles_core::model::request::{CreateJobRequest, JobStep, Mode, Rotation};
use dbroles_core::model::scope::{Patterns, Scope};
use dbroles_core::secrets::database::DatabaseSecrets;
use dbroles_core::secrets::{SecretRef, SecretStore};
use dbroles_core::store::sqlite::SqliteStore;
use dbroles_core::wiring;
use dbroles_core::workflow::Workflow;
use secrecy::ExposeSecret;

mod client;
mod progress;
mod table;

#[derive(Parser)]
#[command(name = "dbroles", version, about = "Provision least-privilege database roles, locally")]
struct Cli {
    /// Where the embedded store and the token key live.
    #[arg(long, global = true, default_value = ".dbroles", env = "DBROLES_DATA_DIR")]
    data_dir: PathBuf,
    /// Instances to know (dbroles.local.toml); without it, the machine's PostgreSQL and MariaDB.
    #[arg(long, global = true, env = "DBROLES_INSTANCES")]
    instances: Option<PathBuf>,
    /// The role prefix: roles are <prefix>_ro, <prefix>_rw and <prefix>_ddl.
    #[arg(long, global = true, default_value = "hoop", env = "DBROLES_ROLE_PREFIX")]
    role_prefix: String,
    /// TLS to the databases: disable, require or verify-full.
    #[arg(long, global = true, default_value = "disable", env = "DBROLES_DB_TLS")]
    tls: String,
    /// CA bundle for --tls verify-full.
    #[arg(long, global = true, env = "DBROLES_DB_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// The organisations that may act on the local account (000000000000). Others
    /// register the accounts of the instances file with PUT /dbroles/accounts/{id}.
    #[arg(long, global = true, value_delimiter = ',', default_value = LOCAL_ORG, env = "DBROLES_HOME_ACCOUNT_ORGS")]
    home_orgs: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one job for the organisation `local` and print it as GET returns it.
    Run {
        #[arg(long, default_value = LOCAL_POSTGRES_ARN)]
        instance: String,
        #[arg(long, default_value = "local-")]
        connection_prefix: String,
        /// Extra steps: create-connections, send-webhook.
        #[arg(long, value_delimiter = ',')]
        steps: Vec<String>,
        /// Take over existing roles of the same names that dbroles did not create.
        #[arg(long)]
        adopt_existing_roles: bool,
        /// How passwords change: `single` (the level's one login) or `alternating`
        /// (two logins per level; a run changes the one consumers are not using).
        /// Default: `DBROLES_ROTATION`, or `single`.
        #[arg(long)]
        rotation: Option<Rotation>,
        /// The most connections the job opens to the server at once, its login
        /// checks included (1 to 32). Default: `DBROLES_MAX_DB_CONNECTIONS`, or 4.
        #[arg(long)]
        max_db_connections: Option<u32>,
        /// `run` provisions; `plan` lists what a run would change and changes
        /// nothing; `revoke` retires the roles, their stored credentials and connections.
        #[arg(long, default_value = "run")]
        mode: Mode,
        #[command(flatten)]
        scope: ScopeArgs,
        /// Every instance the organisation may use, as one fleet job (connections
        /// named `<connection prefix><instance id>-<level>`), instead of `--instance`.
        #[arg(long, conflicts_with = "instance")]
        all: bool,
        /// With `--all`: how many instances are provisioned at once.
        #[arg(long, default_value_t = 8, requires = "all")]
        max_concurrency: u32,
    },
    /// Serve the API (the same router as the API Lambda) on the embedded store.
    Serve {
        #[arg(long, default_value = "127.0.0.1:3000")]
        addr: std::net::SocketAddr,
    },
    /// Print a role's stored credentials as JSON (the only place they are shown).
    Credentials {
        #[arg(long)]
        instance: String,
        #[arg(long)]
        role: String,
        /// The organisation whose job stored them.
        #[arg(long, default_value = LOCAL_ORG)]
        org: String,
    },
    /// Jobs on a deployed API (`--api`, API Gateway's or `dbroles serve`'s).
    Jobs {
        #[command(flatten)]
        remote: client::Remote,
        #[command(subcommand)]
        command: client::JobsCommand,
    },
    /// Fleet jobs on a deployed API.
    Fleet {
        #[command(flatten)]
        remote: client::Remote,
        #[command(subcommand)]
        command: client::FleetCommand,
    },
    /// The organisation's AWS accounts on a deployed API.
    Accounts {
        #[command(flatten)]
        remote: client::Remote,
        #[command(subcommand)]
        command: client::AccountsCommand,
    },
    /// Print a bearer token the local server accepts (last line): an auditor's, or an admin's.
    Token {
        #[arg(long)]
        org: String,
        #[arg(long, default_value = "local-user")]
        sub: String,
        /// In the admin group, which may write.
        #[arg(long)]
        admin: bool,
        /// The groups instead of auditor (comma-separated).
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
    },
}

impl Cli {
    fn settings(&self, env: &LocalConfig) -> anyhow::Result<Settings> {
        engine::validate_prefix_shape(&self.role_prefix).map_err(anyhow::Error::msg)?;
        let tls = TlsConfig { mode: self.tls.parse().map_err(anyhow::Error::msg)?, ca_file: self.ca_file.clone() };
        Ok(Settings {
            role_prefix: self.role_prefix.clone(),
            tls,
            vault: env.vault_policy.clone(),
            accounts: AccountPolicy { home_orgs: self.home_orgs.clone(), role_name: None, ..Default::default() },
            groups: env.groups.clone(),
            rotation: env.rotation,
            max_db_connections: env.max_db_connections,
            ..Settings::default()
        })
    }

    fn inventory(&self) -> anyhow::Result<LocalInventory> {
        match &self.instances {
            Some(path) => LocalInventory::load(path).map_err(anyhow::Error::msg),
            None => Ok(LocalInventory::defaults()),
        }
    }

    /// What the steps reach locally: the embedded store, the local instances, and
    /// credentials kept in the store (or the Vault a job names).
    fn deps(&self) -> anyhow::Result<Deps> {
        let env = LocalConfig::from_env()?;
        let mut deps = wiring::local(Arc::new(self.store()?), Arc::new(self.inventory()?), self.settings(&env)?);
        deps.vault = env.vault;
        deps.webhook = env.webhook.map(wiring::http_webhook);
        Ok(deps)
    }

    /// The local workflow, and the job lifecycle on it.
    fn app(&self, reporter: dbroles_core::executor::Reporter) -> anyhow::Result<(App, Arc<Local>)> {
        let deps = self.deps()?;
        let workflow = Arc::new(Local::new(Executor::provision(LOCAL_WAIT_SCALE), deps.clone()).reporting(reporter));
        Ok((App::new(&deps, workflow.clone()), workflow))
    }

    fn store(&self) -> anyhow::Result<SqliteStore> {
        SqliteStore::open(&self.data_dir.join("dbroles.db"))
            .with_context(|| format!("opening the store in {}", self.data_dir.display()))
    }
}

/// The organisation of `dbroles run`, which may act on the local account.
use dbroles_core::inventory::local::LOCAL_ORG;
use dbroles_core::model::request::Validated;

/// Waits of the state machine (30 s between status checks) last this fraction locally.
const LOCAL_WAIT_SCALE: f64 = 0.01;

/// Each state as it is entered, and each failure, on stderr.
fn report(progress: Progress<'_>) {
    match progress {
        Progress::Entered(state) => eprintln!("dbroles: {state}"),
        Progress::Retrying { state, error, after } => {
            eprintln!("dbroles:   {state}: {}; retrying in {:.1} s", error.message, after.as_secs_f64())
        }
        Progress::Caught { state, error } => eprintln!("dbroles:   {state} failed: {}", error.message),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("dbroles: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Run {
            all,
            instance,
            connection_prefix,
            steps,
            adopt_existing_roles,
            rotation,
            max_db_connections,
            mode,
            scope,
            max_concurrency,
        } => {
            let aws = FleetAwsOptions {
                adopt_existing_roles: *adopt_existing_roles,
                rotation: *rotation,
                max_db_connections: *max_db_connections,
                ..FleetAwsOptions::default()
            };
            let choices = Choices { aws, mode: *mode, scope: scope.scope() };
            match all {
                true => run_fleet(&cli, connection_prefix, steps, choices, *max_concurrency).await,
                false => run_job(&cli, instance, connection_prefix, steps, choices).await,
            }
        }
        Command::Serve { addr } => {
            let (app, _) = cli.app(Arc::new(|_| {}))?;
            repair_at_start(&app).await?;
            let tokens = LocalTokens::load_or_create(&cli.data_dir)?;
            serve(*addr, Arc::new(app), tokens).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Credentials { instance, role, org } => credentials(&cli, instance, role, org).await,
        Command::Jobs { remote, command } => client::jobs(remote, command).await,
        Command::Fleet { remote, command } => client::fleet(remote, command).await,
        Command::Accounts { remote, command } => client::accounts(remote, command).await,
        Command::Token { org, sub, admin, groups } => {
            let tokens = LocalTokens::load_or_create(&cli.data_dir)?;
            let mut groups = match groups.is_empty() {
                true => vec![AUDITOR_GROUP.to_string()],
                false => groups.clone(),
            };
            if *admin {
                groups.push(ADMIN_GROUP.to_string());
            }
            println!("{}", tokens.issue(sub, org, &groups, chrono::Duration::hours(12)));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `dbroles run`: one job for the organisation `local`, started as the API starts
/// one, carried out by the local workflow; the finished job on stdout.
async fn run_job(
    cli: &Cli,
    instance: &str,
    connection_prefix: &str,
    steps: &[String],
    choices: Choices,
) -> anyhow::Result<ExitCode> {
    let job_steps = job_steps(steps)?;
    let request = CreateJobRequest {
        agent_id: uuid::Uuid::new_v4().into(),
        aws: choices.aws.request_for(instance.to_string()),
        connection_prefix_name: connection_prefix.to_string(),
        job_steps,
        vault_provider: None,
        mode: choices.mode,
        scope: choices.scope,
    };
    request.validate()?;
    let (app, workflow) = cli.app(Arc::new(report))?;
    repair_at_start(&app).await?;
    let job_id = jobs::start(&app, LOCAL_ORG, "local-user", request, None).await?;
    eprintln!("dbroles: job {job_id} on {instance}");
    workflow.wait(&workflow.execution_id(&job_id)).await;
    let done = jobs::find(app.deps.jobs.as_ref(), LOCAL_ORG, &job_id).await?.job;
    print_outcome(&done);
    println!("{}", serde_json::to_string_pretty(&done)?);
    Ok(if done.phase() == Phase::Completed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// What `dbroles run` asks of each job besides its instance.
struct Choices {
    aws: FleetAwsOptions,
    mode: Mode,
    scope: Scope,
}

/// `scope`'s flags: globs (`*`) separated by commas.
#[derive(clap::Args)]
struct ScopeArgs {
    /// Grant only in these databases (default: every one); a run withdraws what the roles hold in the others.
    #[arg(long, value_delimiter = ',')]
    databases: Vec<String>,
    #[arg(long, value_delimiter = ',')]
    exclude_databases: Vec<String>,
    /// PostgreSQL: grant only in these schemas (default: every one).
    #[arg(long, value_delimiter = ',')]
    schemas: Vec<String>,
    #[arg(long, value_delimiter = ',')]
    exclude_schemas: Vec<String>,
    /// Only these levels: ro, rw, ddl (default: all three).
    #[arg(long, value_delimiter = ',', value_parser = level)]
    levels: Vec<Level>,
}

impl ScopeArgs {
    fn scope(&self) -> Scope {
        let patterns = |include: &[String], exclude: &[String]| Patterns { include: include.to_vec(), exclude: exclude.to_vec() };
        Scope {
            databases: patterns(&self.databases, &self.exclude_databases),
            schemas: patterns(&self.schemas, &self.exclude_schemas),
            levels: self.levels.clone(),
        }
    }
}

fn level(text: &str) -> Result<Level, String> {
    Level::parse(text).ok_or_else(|| format!("'{text}' is no level: expected ro, rw or ddl"))
}

/// What the sweep schedule does on AWS, at every start: a job the previous process
/// left running (killed mid-job) is failed, naming why, and its server released.
async fn repair_at_start(app: &App) -> anyhow::Result<()> {
    let why = "the dbroles process running it ended before the job did";
    let swept = jobs::sweep(app, why, chrono::Duration::zero()).await?;
    for job_id in &swept.failed {
        eprintln!("dbroles: job {job_id} was left running by a process that ended: failed, its server released");
    }
    for fleet_job_id in fleet::sweep(app, why, chrono::Duration::zero()).await? {
        eprintln!("dbroles: fleet job {fleet_job_id} was left running by a process that ended: failed");
    }
    Ok(())
}

fn job_steps(steps: &[String]) -> anyhow::Result<Vec<JobStep>> {
    steps
        .iter()
        .map(|step| serde_json::from_value::<JobStep>(serde_json::Value::String(step.clone())))
        .collect::<Result<Vec<_>, _>>()
        .context("--steps: expected create-connections and/or send-webhook")
}

/// `dbroles run --all`: one fleet job over every instance the organisation
/// `local` may use, carried out by the fleet definition's Map; the finished fleet
/// job on stdout, each instance's outcome on stderr.
async fn run_fleet(
    cli: &Cli,
    connection_prefix: &str,
    steps: &[String],
    choices: Choices,
    max_concurrency: u32,
) -> anyhow::Result<ExitCode> {
    let request = CreateFleetJobRequest {
        selector: Selector { regions: cli.inventory()?.regions(), ..Selector::default() },
        agent_id: uuid::Uuid::new_v4().into(),
        connection_prefix_name: connection_prefix.to_string(),
        job_steps: job_steps(steps)?,
        vault_provider: None,
        aws: choices.aws,
        max_concurrency,
        tolerated_failure_percentage: 100.0,
        mode: choices.mode,
        scope: choices.scope,
    };
    request.validate()?;
    let (app, workflow) = cli.app(Arc::new(report))?;
    repair_at_start(&app).await?;
    let fleet_job_id = fleet::start(&app, LOCAL_ORG, "local-user", request).await?;
    eprintln!("dbroles: fleet job {fleet_job_id}, at most {max_concurrency} instances at once");
    let progress = Arc::new(progress::FleetProgress::new(&fleet_job_id));
    let watching = {
        let (app, id, progress) = (app.clone(), fleet_job_id.clone(), progress.clone());
        tokio::spawn(async move {
            loop {
                if let Ok(fleet) = fleet::find(app.deps.fleets.as_ref(), app.deps.jobs.as_ref(), LOCAL_ORG, &id).await {
                    progress.update(&fleet.status.counts);
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        })
    };
    workflow.wait(&workflow.fleet_execution_id(&fleet_job_id).expect("the local workflow runs fleets")).await;
    watching.abort();
    let done = fleet::find(app.deps.fleets.as_ref(), app.deps.jobs.as_ref(), LOCAL_ORG, &fleet_job_id).await?;
    let jobs = fleet::children(app.deps.jobs.as_ref(), LOCAL_ORG, &fleet_job_id, MAX_INSTANCES, None).await?.items;
    for job in &jobs {
        let status = job.status.as_ref().map_or(("running", ""), |s| (s.phase.as_str(), s.message.as_str()));
        eprintln!("dbroles:   {} {}: {}", job.db_arn(), status.0, status.1);
    }
    for skipped in &done.status.not_started {
        eprintln!("dbroles:   {} not started: {}", skipped.instance_arn, skipped.message);
    }
    progress.update(&done.status.counts);
    progress.finish(&format!("{}: {}", done.status.phase.as_str(), done.status.message));
    println!("{}", serde_json::to_string_pretty(&serde_json::json!({"fleet_job": done, "jobs": jobs}))?);
    Ok(if done.status.phase == Phase::Completed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn print_outcome(job: &Job) {
    let Some(status) = &job.status else { return };
    for result in &status.result {
        eprintln!("dbroles:   {} {}: {}", result.user_role, result.status.as_str(), result.message);
        for change in result.changes.iter().flatten() {
            eprintln!("dbroles:     {change}");
        }
        for kept in &result.not_revocable {
            eprintln!("dbroles:     not revocable: {kept}");
        }
    }
    eprintln!("dbroles: {}: {}", status.phase.as_str(), status.message);
}

/// `dbroles credentials`: a role's stored credentials, the only place they are shown.
async fn credentials(cli: &Cli, instance: &str, role: &str, org: &str) -> anyhow::Result<ExitCode> {
    let level = Level::parse(role).with_context(|| format!("--role {role}: expected ro, rw or ddl"))?;
    let secrets = DatabaseSecrets::new(Arc::new(cli.store()?));
    let secret = SecretRef {
        org: org.to_string(),
        instance_id: String::new(),
        instance_arn: instance.to_string(),
        job_id: String::new(),
        user: level.user(&cli.role_prefix),
        host: String::new(),
    };
    let Some(credentials) = secrets.read(&secrets.secret_id(&secret)).await? else {
        bail!("no stored credentials for {} on {instance}: run a job first", secret.user);
    };
    let shown = serde_json::json!({
        "HOST": credentials.host,
        "PORT": credentials.port.to_string(),
        "USER": credentials.user,
        "PASSWORD": credentials.password.expose_secret(),
        "DB": credentials.db,
    });
    println!("{}", serde_json::to_string_pretty(&shown)?);
    Ok(ExitCode::SUCCESS)
}

/// The local server: the API's router, each caller read from the bearer token
/// the local server signed (as API Gateway's JWT authorizer would check it).
async fn serve(addr: std::net::SocketAddr, app: Arc<App>, tokens: LocalTokens) -> anyhow::Result<()> {
    let router = dbroles_core::api::authenticated(dbroles_core::api::router(app), move |parts| {
        tokens.verify(dbroles_core::auth::authorization(&parts.headers)?)
    });
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    eprintln!("dbroles: serving the API on http://{}", listener.local_addr()?);
    axum::serve(listener, router).await?;
    Ok(())
}
