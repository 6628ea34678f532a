//! Each Lambda's release binary: its size, its deployment zip, and its init time
//! against a local Lambda Runtime API emulator.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{millis, quantile, Row};

const COLD_STARTS: usize = 20;

/// The three binaries `sam build` makes: every step function shares `dbroles-step`.
const BINARIES: [&str; 3] = ["api", "events", "step"];

pub async fn run(dir: &Path, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let binaries = BINARIES.map(|name| (format!("dbroles-{name}"), dir.join(format!("dbroles-{name}"))));
    measure(&binaries, rows).await
}

/// The artifacts `scripts/package` left in `.aws-sam/build`: one function of each binary.
pub async fn run_packaged(dir: &Path, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let functions = ["ApiFunction", "EventsFunction", "ProvisionFunction"];
    let bootstraps = functions.map(|function| (format!("sam build {function}"), dir.join(function).join("bootstrap")));
    measure(&bootstraps, rows).await
}

async fn measure(binaries: &[(String, std::path::PathBuf)], rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let emulator = Emulator::start().await?;
    for (label, binary) in binaries {
        let bytes = std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
        let zipped = zip_as_bootstrap(&bytes)?;
        let init = emulator.median_init(binary).await?;
        rows.push(Row::new(
            format!("{label}: binary, zip, init (median of {COLD_STARTS})"),
            format!("{:.1} MB, {:.1} MB, {}", mb(bytes.len()), mb(zipped), millis(init)),
            "zip < 5 MB, init < 20 ms",
        ));
    }
    Ok(())
}

fn mb(bytes: usize) -> f64 {
    bytes as f64 / 1_000_000.0
}

/// The size of the zip Lambda receives: the binary as `bootstrap`, deflated.
fn zip_as_bootstrap(binary: &[u8]) -> anyhow::Result<usize> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated).unix_permissions(0o755);
    zip.start_file("bootstrap", options)?;
    zip.write_all(binary)?;
    Ok(zip.finish()?.into_inner().len())
}

/// The Runtime API's `next` endpoint: reports when a function first asks for an
/// event, and never answers (the function is stopped then).
struct Emulator {
    address: String,
    asked: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Instant>>,
}

impl Emulator {
    async fn start() -> anyhow::Result<Self> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let router = axum::Router::new().route(
            "/2018-06-01/runtime/invocation/next",
            axum::routing::get(move || {
                let _ = tx.send(Instant::now());
                std::future::pending::<&'static str>()
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        tokio::spawn(async move { axum::serve(listener, router).await });
        Ok(Self { address, asked: tokio::sync::Mutex::new(rx) })
    }

    async fn median_init(&self, binary: &Path) -> anyhow::Result<Duration> {
        let mut asked = self.asked.lock().await;
        let mut times = Vec::with_capacity(COLD_STARTS);
        for _ in 0..COLD_STARTS {
            let started = Instant::now();
            let mut child = tokio::process::Command::new(binary)
                .envs(lambda_environment(&self.address))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {}", binary.display()))?;
            match tokio::time::timeout(Duration::from_secs(10), asked.recv()).await {
                Ok(Some(at)) => times.push(at - started),
                _ => {
                    child.kill().await.ok();
                    let output = child.wait_with_output().await?;
                    anyhow::bail!("{} never asked for an event: {}", binary.display(), String::from_utf8_lossy(&output.stderr));
                }
            }
            child.kill().await?;
        }
        times.sort();
        Ok(quantile(&times, 0.5))
    }
}

/// What Lambda sets, and what the template sets (no AWS call happens at init).
fn lambda_environment(runtime_api: &str) -> Vec<(&'static str, String)> {
    [
        ("AWS_LAMBDA_RUNTIME_API", runtime_api),
        ("AWS_LAMBDA_FUNCTION_NAME", "dbroles-bench"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/dbroles-bench"),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "bench"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "bench"),
        ("AWS_SECRET_ACCESS_KEY", "bench"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("DBROLES_TABLE", "dbroles-bench"),
        ("DBROLES_STATE_MACHINE_ARN", "arn:aws:states:us-east-1:123456789012:stateMachine:dbroles-provision"),
        // The heaviest step: the provision function.
        ("DBROLES_STEP", "provision"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect()
}
