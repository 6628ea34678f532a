//! `dbroles` as a client, driven against `dbroles serve` as a user would: the
//! binary, its flags, its output and its exit codes.

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use dbroles_tests::{free_port, unique, Leaves};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_dbroles");
const PG: &str = "arn:aws:rds:us-east-1:000000000000:db:client-pg";
const DEAD: &str = "arn:aws:rds:us-east-1:000000000000:db:client-dead";
const SILENT: &str = "arn:aws:rds:us-east-1:000000000000:db:client-silent";

/// `dbroles serve` on a port of its own, over the machine's PostgreSQL, a closed
/// port and a port that never answers; killed when dropped.
struct Server {
    api: String,
    token: String,
    child: Child,
    prefix: String,
    _silent: std::net::TcpListener,
    dir: Option<tempfile::TempDir>,
    _leaves: Leaves,
}

impl Server {
    fn start() -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), unique("k"))
    }

    /// `dbroles serve` on `dir`'s store and instances, with roles `<prefix>_*`.
    fn start_in(dir: tempfile::TempDir, prefix: String) -> Self {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let instance = |arn: &str, port: u16| {
            format!(
                "[[instances]]\narn = \"{arn}\"\nengine = \"postgres\"\nhost = \"127.0.0.1\"\nport = {port}\n\
                 master_user = \"postgres\"\nmaster_password = \"\"\ntags = [{{ key = \"dbroles:org\", value = \"local\" }}]\n"
            )
        };
        let instances = [instance(PG, 5432), instance(DEAD, free_port()), instance(SILENT, silent.local_addr().unwrap().port())];
        std::fs::write(dir.path().join("instances.toml"), instances.join("\n")).unwrap();
        let port = free_port();
        let child = Command::new(BIN)
            .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
            .args(common(&dir, &prefix))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbroles serve starts");
        let token = Command::new(BIN).args(["token", "--org", "local", "--admin"]).args(common(&dir, &prefix)).output().unwrap();
        let token = String::from_utf8(token.stdout).unwrap().lines().last().unwrap().to_string();
        let api = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _leaves = Leaves::new().prefix(&prefix);
        Self { api, token, child, prefix, _silent: silent, dir: Some(dir), _leaves }
    }

    /// `dbroles <args>` against the server.
    fn client(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .args(["--interval", "100"])
            .env("DBROLES_API_URL", &self.api)
            .env("DBROLES_TOKEN", &self.token)
            .output()
            .expect("dbroles runs")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn common(dir: &tempfile::TempDir, prefix: &str) -> Vec<String> {
    let path = |name: &str| dir.path().join(name).display().to_string();
    ["--data-dir".into(), path("data"), "--instances".into(), path("instances.toml"), "--role-prefix".into(), prefix.into()]
        .into()
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
    })
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("an exit code")
}

#[test]
fn the_client_creates_watches_lists_cancels_and_follows_fleets() {
    let server = Server::start();

    // A job that completes: exit 0, the finished job on stdout, its state on stderr.
    let done = server.client(&["jobs", "create", "--instance", PG, "--watch"]);
    assert_eq!(code(&done), 0, "{}", String::from_utf8_lossy(&done.stderr));
    let job = json(&done);
    assert_eq!(job["status"]["phase"], "completed");
    assert!(String::from_utf8_lossy(&done.stderr).contains("completed"), "progress on stderr");

    // A job that fails (nothing listens): exit 1.
    let failed = server.client(&["jobs", "create", "--instance", DEAD, "--watch"]);
    assert_eq!(code(&failed), 1);
    assert_eq!(json(&failed)["status"]["phase"], "failed");

    // A job that hangs: created, seen running, listed, cancelled; watching it then exits 3.
    let created = server.client(&["jobs", "create", "--instance", SILENT]);
    assert_eq!(code(&created), 0);
    let id = json(&created)["job_id"].as_str().unwrap().to_string();
    assert_eq!(json(&server.client(&["jobs", "get", &id]))["status"]["phase"], "running");
    let listed = server.client(&["jobs", "list", "--output", "table"]);
    let table = String::from_utf8_lossy(&listed.stdout);
    assert!(table.starts_with("ID") && table.contains(&id) && table.contains("running"), "{table}");
    let cancelled = server.client(&["jobs", "cancel", &id]);
    assert_eq!((code(&cancelled), json(&cancelled)["cancelled"].clone()), (0, Value::Bool(true)));
    let watched = server.client(&["jobs", "get", &id, "--watch"]);
    assert_eq!(code(&watched), 3, "a cancelled job has its own exit code");
    // The API's refusals are exit 2, with its message.
    let again = server.client(&["jobs", "cancel", &id]);
    assert_eq!(code(&again), 2);
    assert!(String::from_utf8_lossy(&again.stderr).contains(&format!("409 job {id} has already finished")));

    // A fleet over the three: a progress bar with counts, and the counts at the end.
    let fleet = server.client(&["fleet", "create", "--watch", "--max-concurrency", "3"]);
    let stderr = String::from_utf8_lossy(&fleet.stderr);
    let finished = json(&fleet);
    let counts = &finished["status"]["counts"];
    assert_eq!((counts["total"].as_u64(), counts["completed"].as_u64(), counts["failed"].as_u64()), (Some(3), Some(1), Some(2)));
    assert!(stderr.contains("3 instances: 1 completed, 2 failed, 0 skipped"), "{stderr}");
    let expected = if finished["status"]["phase"] == "completed" { 0 } else { 1 };
    assert_eq!(code(&fleet), expected);
    let fleets = server.client(&["fleet", "list", "--output", "table"]);
    assert!(String::from_utf8_lossy(&fleets.stdout).contains(finished["id"].as_str().unwrap()));
}

/// A `dbroles serve` killed during a job: started again, it fails the job,
/// naming why, and releases its server at once (not after the 75-minute lease).
#[test]
fn a_restarted_server_fails_the_job_its_killed_predecessor_left_running() {
    let mut server = Server::start();
    let created = server.client(&["jobs", "create", "--instance", SILENT]);
    let id = json(&created)["job_id"].as_str().unwrap().to_string();
    assert_eq!(json(&server.client(&["jobs", "get", &id]))["status"]["phase"], "running");
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    let (dir, prefix) = (server.dir.take().unwrap(), server.prefix.clone());
    drop(server);
    let restarted = Server::start_in(dir, prefix);
    let job = json(&restarted.client(&["jobs", "get", &id]));
    assert_eq!(job["status"]["phase"], "failed", "{job}");
    assert_eq!(
        job["status"]["message"],
        "the job's execution never started or was lost: the dbroles process running it ended before the job did"
    );
    // Its server is free: a new job is accepted (and fails on the closed port, not 409).
    let again = restarted.client(&["jobs", "create", "--instance", SILENT]);
    assert_eq!(code(&again), 0, "{}", String::from_utf8_lossy(&again.stderr));
}

/// `--rotation alternating`: each job names the login consumers now use, on the
/// API through the client and locally through `dbroles run`.
#[test]
fn the_client_and_run_rotate_alternating_logins() {
    let server = Server::start();
    let ro = format!("{}_ro", server.prefix);
    for login in [ro.clone(), format!("{ro}_alt")] {
        let done = server.client(&["jobs", "create", "--instance", PG, "--rotation", "alternating", "--watch"]);
        assert_eq!(code(&done), 0, "{}", String::from_utf8_lossy(&done.stderr));
        assert_eq!(json(&done)["status"]["result"][0]["active_login"], Value::String(login));
    }
    let refused = server.client(&["jobs", "create", "--instance", PG, "--rotation", "weekly"]);
    assert_eq!(code(&refused), 2);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("aws.rotation: unknown variant `weekly`"));
    let dir = server.dir.as_ref().unwrap();
    let run = Command::new(BIN)
        .args(["run", "--instance", PG, "--rotation", "alternating"])
        .args(common(dir, &server.prefix))
        .output()
        .expect("dbroles run runs");
    assert_eq!(code(&run), 0, "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(json(&run)["status"]["result"][0]["active_login"], Value::String(ro), "back to the level's role");
}
