//! `dbroles` as a client of a deployed API: the same requests against API
//! Gateway on AWS and against `dbroles serve` locally, the API's JSON on stdout
//! (or a table), progress on stderr.
//!
//! | exit code | when |
//! | --- | --- |
//! | 0 | the request succeeded; with `--watch`, the job (or fleet job) completed |
//! | 1 | with `--watch`, it failed |
//! | 2 | the API refused the request (its message on stderr), or could not be reached |
//! | 3 | with `--watch`, it was cancelled |

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

use crate::progress::{FleetProgress, JobProgress};
use crate::table::Kind;

/// The API, who calls it, and how answers are shown.
#[derive(Args)]
pub struct Remote {
    /// The API's base URL: API Gateway's, or `dbroles serve`'s (http://127.0.0.1:3000).
    #[arg(long, global = true, env = "DBROLES_API_URL")]
    api: Option<String>,
    /// A bearer token.
    #[arg(long, global = true, env = "DBROLES_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the bearer token.
    #[arg(long, global = true, env = "DBROLES_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// A command that prints the bearer token (run with `sh -c`).
    #[arg(long, global = true, env = "DBROLES_TOKEN_COMMAND")]
    token_command: Option<String>,
    /// The API's JSON, or a table.
    #[arg(long, global = true, value_enum, default_value = "json")]
    output: Output,
    /// With `--watch`: milliseconds between two looks.
    #[arg(long, global = true, default_value_t = 1000)]
    interval: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Json,
    Table,
}

/// A job or fleet job to show, once or until it ends.
#[derive(Args)]
pub struct Shown {
    id: String,
    /// Follow it until it ends: exit 0 if it completed, 1 if it failed, 3 if cancelled.
    #[arg(long)]
    watch: bool,
}

#[derive(Subcommand)]
pub enum JobsCommand {
    /// Create a job for an instance (POST /dbroles/jobs).
    Create {
        #[arg(long)]
        instance: String,
        #[arg(long, default_value = "dbroles-")]
        connection_prefix: String,
        /// Extra steps: create-connections, send-webhook.
        #[arg(long, value_delimiter = ',')]
        steps: Vec<String>,
        /// The hoop.dev agent the connections are for.
        #[arg(long, default_value = "00000000-0000-0000-0000-000000000000")]
        agent_id: String,
        #[arg(long)]
        adopt_existing_roles: bool,
        /// `single` or `alternating` (two logins per level); the deployment's default if not given.
        #[arg(long)]
        rotation: Option<String>,
        /// The most connections the job opens to the server at once (1 to 32); the deployment's default if not given.
        #[arg(long)]
        max_db_connections: Option<u32>,
        /// `run` (the default), `plan` (list what a run would change, change nothing) or
        /// `revoke` (retire the roles, their credentials and connections).
        #[arg(long)]
        mode: Option<String>,
        /// Follow the job until it ends: exit 0 if it completed, 1 if it failed, 3 if cancelled.
        #[arg(long)]
        watch: bool,
    },
    /// Show a job.
    Get(Shown),
    /// List jobs, newest first.
    List {
        /// running, failed or completed.
        #[arg(long)]
        phase: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Cancel a running job.
    Cancel { id: String },
    /// Forget a finished job.
    Delete { id: String },
}

#[derive(Subcommand)]
pub enum FleetCommand {
    /// Create a fleet job over the instances a selector picks (POST /dbroles/fleet-jobs).
    Create {
        #[arg(long, value_delimiter = ',')]
        accounts: Vec<String>,
        #[arg(long, value_delimiter = ',')]
        regions: Vec<String>,
        #[arg(long, value_delimiter = ',')]
        engines: Vec<String>,
        /// key=value or key, all of which must hold.
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
        #[arg(long, default_value = "dbroles-")]
        connection_prefix: String,
        #[arg(long, default_value = "00000000-0000-0000-0000-000000000000")]
        agent_id: String,
        #[arg(long, default_value_t = 8)]
        max_concurrency: u32,
        /// Follow the fleet job with a progress bar until it ends.
        #[arg(long)]
        watch: bool,
    },
    /// Show a fleet job.
    Get(Shown),
    /// List fleet jobs, newest first.
    List,
    /// Cancel a running fleet job and its running jobs.
    Cancel { id: String },
}

#[derive(Subcommand)]
pub enum AccountsCommand {
    /// The accounts the organisation registered, and its ExternalId.
    List,
    /// Register an AWS account through a role there that trusts the organisation's ExternalId.
    Register {
        account_id: String,
        #[arg(long)]
        role_arn: String,
    },
}

/// The answer of a request: its status and JSON body.
struct Answer {
    status: reqwest::StatusCode,
    body: Value,
}

/// An API client with its token.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    output: Output,
    interval: Duration,
}

impl Client {
    pub fn new(remote: &Remote) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
        let api = remote.api.as_deref().context("no API: give --api URL (or DBROLES_API_URL)")?;
        Ok(Self {
            http,
            base: api.trim_end_matches('/').to_string(),
            token: token(remote)?,
            output: remote.output,
            interval: Duration::from_millis(remote.interval.max(50)),
        })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Answer> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| format!("calling {}", self.base))?;
        let status = response.status();
        let text = response.text().await?;
        Ok(Answer { status, body: serde_json::from_str(&text).unwrap_or(Value::Null) })
    }

    /// The answer's body if the request succeeded; the API's message on stderr and exit 2 otherwise.
    async fn ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, ExitCode> {
        match self.call(method, path, body).await {
            Ok(answer) if answer.status.is_success() => Ok(answer.body),
            Ok(answer) => {
                let message = answer.body["message"].as_str().map_or_else(|| answer.body.to_string(), str::to_string);
                eprintln!("dbroles: {} {message}", answer.status.as_u16());
                Err(ExitCode::from(REFUSED))
            }
            Err(error) => {
                eprintln!("dbroles: {error:#}");
                Err(ExitCode::from(REFUSED))
            }
        }
    }

    fn show(&self, kind: Kind, value: &Value) {
        match self.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(value).unwrap_or_default()),
            Output::Table => print!("{}", crate::table::render(kind, value)),
        }
    }
}

pub const REFUSED: u8 = 2;
pub const CANCELLED: u8 = 3;

/// The bearer token: given, read from a file, or printed by a command.
fn token(remote: &Remote) -> anyhow::Result<String> {
    let token = match (&remote.token, &remote.token_file, &remote.token_command) {
        (Some(token), _, _) => token.clone(),
        (None, Some(file), _) => std::fs::read_to_string(file).with_context(|| format!("--token-file {}", file.display()))?,
        (None, None, Some(command)) => {
            let output = std::process::Command::new("sh").arg("-c").arg(command).output().context("--token-command")?;
            if !output.status.success() {
                bail!("--token-command exited with {}", output.status);
            }
            String::from_utf8(output.stdout).context("--token-command printed no text")?
        }
        (None, None, None) => bail!("no token: give --token, --token-file or --token-command (or DBROLES_TOKEN)"),
    };
    // The last line: commands such as `dbroles token` print only the token there.
    Ok(token.lines().map(str::trim).filter(|line| !line.is_empty()).last().unwrap_or_default().to_string())
}

fn steps(steps: &[String]) -> Value {
    json!(steps)
}

pub async fn jobs(remote: &Remote, command: &JobsCommand) -> anyhow::Result<ExitCode> {
    use reqwest::Method;
    let client = Client::new(remote)?;
    let result = match command {
        JobsCommand::Create {
            instance,
            connection_prefix,
            steps: extra,
            agent_id,
            adopt_existing_roles,
            rotation,
            max_db_connections,
            mode,
            watch,
        } => {
            let aws = json!({
                "instance_arn": instance,
                "adopt_existing_roles": adopt_existing_roles,
                "rotation": rotation,
                "max_db_connections": max_db_connections,
            });
            let body = json!({
                "mode": mode,
                "agent_id": agent_id,
                "aws": aws,
                "connection_prefix_name": connection_prefix,
                "job_steps": steps(extra),
            });
            match client.ok(Method::POST, "/dbroles/jobs", Some(body)).await {
                Ok(created) if *watch => watch_job(&client, created["job_id"].as_str().unwrap_or_default()).await,
                Ok(created) => Ok(show(&client, Kind::Job, &created)),
                Err(code) => Ok(code),
            }
        }
        JobsCommand::Get(Shown { id, watch: true }) => watch_job(&client, id).await,
        JobsCommand::Get(Shown { id, watch: false }) => {
            shown(&client, Kind::Job, Method::GET, &format!("/dbroles/jobs/{id}")).await
        }
        JobsCommand::List { phase, limit } => {
            let filter = phase.as_deref().map(|phase| format!("&phase={phase}")).unwrap_or_default();
            shown(&client, Kind::Jobs, Method::GET, &format!("/dbroles/jobs?limit={limit}{filter}")).await
        }
        JobsCommand::Cancel { id } => shown(&client, Kind::Job, Method::POST, &format!("/dbroles/jobs/{id}/cancel")).await,
        JobsCommand::Delete { id } => match client.ok(Method::DELETE, &format!("/dbroles/jobs/{id}"), None).await {
            Ok(_) => Ok(ExitCode::SUCCESS),
            Err(code) => Ok(code),
        },
    };
    result
}

pub async fn fleet(remote: &Remote, command: &FleetCommand) -> anyhow::Result<ExitCode> {
    use reqwest::Method;
    let client = Client::new(remote)?;
    match command {
        FleetCommand::Create { accounts, regions, engines, tags, connection_prefix, agent_id, max_concurrency, watch } => {
            let body = json!({
                "selector": {"accounts": accounts, "regions": regions, "engines": engines, "tags": tags},
                "agent_id": agent_id,
                "connection_prefix_name": connection_prefix,
                "max_concurrency": max_concurrency,
            });
            match client.ok(Method::POST, "/dbroles/fleet-jobs", Some(body)).await {
                Ok(created) if *watch => watch_fleet(&client, created["fleet_job_id"].as_str().unwrap_or_default()).await,
                Ok(created) => Ok(show(&client, Kind::Fleet, &created)),
                Err(code) => Ok(code),
            }
        }
        FleetCommand::Get(Shown { id, watch: true }) => watch_fleet(&client, id).await,
        FleetCommand::Get(Shown { id, watch: false }) => {
            shown(&client, Kind::Fleet, Method::GET, &format!("/dbroles/fleet-jobs/{id}")).await
        }
        FleetCommand::List => shown(&client, Kind::Fleets, Method::GET, "/dbroles/fleet-jobs").await,
        FleetCommand::Cancel { id } => {
            shown(&client, Kind::Fleet, Method::POST, &format!("/dbroles/fleet-jobs/{id}/cancel")).await
        }
    }
}

pub async fn accounts(remote: &Remote, command: &AccountsCommand) -> anyhow::Result<ExitCode> {
    use reqwest::Method;
    let client = Client::new(remote)?;
    match command {
        AccountsCommand::List => shown(&client, Kind::Accounts, Method::GET, "/dbroles/accounts").await,
        AccountsCommand::Register { account_id, role_arn } => {
            let body = json!({"role_arn": role_arn});
            match client.ok(Method::PUT, &format!("/dbroles/accounts/{account_id}"), Some(body)).await {
                Ok(account) => Ok(show(&client, Kind::Account, &account)),
                Err(code) => Ok(code),
            }
        }
    }
}

fn show(client: &Client, kind: Kind, value: &Value) -> ExitCode {
    client.show(kind, value);
    ExitCode::SUCCESS
}

/// One request whose answer is shown.
async fn shown(client: &Client, kind: Kind, method: reqwest::Method, path: &str) -> anyhow::Result<ExitCode> {
    Ok(match client.ok(method, path, None).await {
        Ok(value) => show(client, kind, &value),
        Err(code) => code,
    })
}

/// How a finished job or fleet job exits: 0 completed, 1 failed, 3 cancelled.
pub fn exit_code(phase: &str, cancelled: bool) -> ExitCode {
    match (phase, cancelled) {
        (_, true) => ExitCode::from(CANCELLED),
        ("completed", _) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

/// Follows a job until it ends, its state on stderr; the finished job on stdout.
async fn watch_job(client: &Client, id: &str) -> anyhow::Result<ExitCode> {
    let progress = JobProgress::new(id);
    loop {
        let job = match client.ok(reqwest::Method::GET, &format!("/dbroles/jobs/{id}"), None).await {
            Ok(job) => job,
            Err(code) => return Ok(code),
        };
        let phase = job["status"]["phase"].as_str().unwrap_or("running").to_string();
        progress.update(&phase, job["status"]["message"].as_str().unwrap_or_default());
        if phase != "running" {
            progress.finish();
            client.show(Kind::Job, &job);
            return Ok(exit_code(&phase, job["cancelled"].as_bool().unwrap_or(false)));
        }
        tokio::time::sleep(client.interval).await;
    }
}

/// Follows a fleet job until it ends, a progress bar with its counts on stderr; the finished fleet job on stdout.
async fn watch_fleet(client: &Client, id: &str) -> anyhow::Result<ExitCode> {
    let progress = FleetProgress::new(id);
    loop {
        let fleet = match client.ok(reqwest::Method::GET, &format!("/dbroles/fleet-jobs/{id}"), None).await {
            Ok(fleet) => fleet,
            Err(code) => return Ok(code),
        };
        let status = &fleet["status"];
        let counts = serde_json::from_value(status["counts"].clone()).unwrap_or_default();
        progress.update(&counts);
        let phase = status["phase"].as_str().unwrap_or("running").to_string();
        if phase != "running" {
            progress.finish(status["message"].as_str().unwrap_or_default());
            client.show(Kind::Fleet, &fleet);
            return Ok(exit_code(&phase, status["cancelled"].as_bool().unwrap_or(false)));
        }
        tokio::time::sleep(client.interval).await;
    }
}
