//! At `RUST_LOG=debug`, no password and no SCRAM verifier reaches the logs: the
//! database drivers log every statement at debug, and the Lambdas' filter
//! (`config::log_filter`) keeps them out. And a server error that quotes the
//! statement setting a password is withheld from the role's message and the logs.
//! A test binary of its own: it sets the process's environment and its global subscriber.

use std::io::Write;
use std::sync::{Arc, Mutex};

use dbroles_core::engine::{Family, Level};
use dbroles_core::model::job::Phase;
use dbroles_core::provision::{provision_roles, Endpoint, Options};
use dbroles_core::secrets::{SecretRef, SecretStore};
use dbroles_tests::*;
use secrecy::ExposeSecret;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn debug_logs_carry_no_password_and_no_verifier() {
    std::env::set_var("RUST_LOG", "debug");
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_env_filter(dbroles_core::config::log_filter())
        .with_writer(move || writer.clone())
        .init();
    tracing::debug!("debug logging is on");

    let cluster = PgCluster::start();
    let pg_master = cluster.rds_like().await;
    let my_master = unique("logm");
    let my_password = rds_like_master(&my_master).await;
    let _leaves = Leaves::new().user(&my_master);
    let (_dir, store) = own_store();
    let prefix = unique("l");
    let _roles = Leaves::new().prefix(&prefix);
    let secret = secret_ref("");
    let mut passwords = Vec::new();
    for (target, engine, arn) in [
        (target(Family::Postgres, cluster.port, "master", pg_master), "postgres", "pg"),
        (target(Family::MySql, 3306, &my_master, my_password), "mariadb", "my"),
    ] {
        let secret = SecretRef { instance_arn: format!("{}-{arn}", secret.instance_arn), ..secret.clone() };
        let endpoint = Endpoint { host: "127.0.0.1".into(), port: target.port, db: String::new(), engine: engine.into() };
        let outcome =
            provision_roles(&target, &endpoint, &prefix, store.as_ref(), &secret, Options::adopting(false)).await.unwrap();
        assert!(outcome.results.iter().all(|r| r.status == Phase::Completed), "{:?}", outcome.results);
        for level in Level::ALL {
            let id = store.secret_id(&SecretRef { user: level.user(&prefix), ..secret.clone() });
            passwords.push(store.read(&id).await.unwrap().unwrap().password.expose_secret().to_string());
        }
    }

    // A server whose errors quote the password statements (a syntax error does).
    let echoing = EchoingMariaDb::start(3306).await;
    let target = target(Family::MySql, echoing.port, &my_master, my_password);
    let endpoint = Endpoint { host: "127.0.0.1".into(), port: echoing.port, db: String::new(), engine: "mariadb".into() };
    let secret = SecretRef { instance_arn: format!("{}-echo", secret.instance_arn), ..secret.clone() };
    let outcome =
        provision_roles(&target, &endpoint, &unique("e"), store.as_ref(), &secret, Options::adopting(false)).await.unwrap();
    let intercepted = echoing.intercepted.lock().unwrap().clone();
    assert_eq!(intercepted.len(), 3, "one password statement per role");
    for query in &intercepted {
        let quoted = query.split("IDENTIFIED BY '").nth(1).and_then(|rest| rest.split('\'').next()).unwrap();
        passwords.push(quoted.to_string());
    }
    let messages: Vec<&str> = outcome.results.iter().map(|r| r.message.as_str()).collect();
    for result in &outcome.results {
        assert_eq!(result.status, Phase::Failed);
        assert!(result.message.contains("withheld"), "{}", result.message);
    }

    // A step's lines carry its job and organisation, wherever it runs: here one whose job is gone.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(dbroles_core::store::sqlite::SqliteStore::open(&dir.path().join("store.db")).unwrap());
    let inventory = Arc::new(dbroles_core::inventory::local::LocalInventory::new(Vec::new()).unwrap());
    let deps = dbroles_core::wiring::local(store, inventory, settings("hoop"));
    let input = serde_json::json!({"org_id": "acme", "job_id": "JOB-LOGGED"});
    dbroles_core::steps::run(dbroles_core::steps::Step::Resolve, &deps, input).await.expect_err("no such job");

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("debug logging is on"), "the test logs at debug: {logs}");
    let failed = logs.lines().find(|line| line.contains("step failed")).expect("the step's failure is logged");
    assert!(failed.contains("job_id=\"JOB-LOGGED\"") && failed.contains("org=\"acme\""), "{failed}");
    assert!(!logs.contains("SCRAM-SHA-256$"), "a verifier reached the logs");
    for password in &passwords {
        for part in password.as_bytes().windows(8).map(|part| std::str::from_utf8(part).unwrap()) {
            assert!(!logs.contains(part), "a password reached the logs");
            assert!(messages.iter().all(|message| !message.contains(part)), "a password reached a role's message");
        }
    }
    let mut root = mariadb("root", "").await.unwrap();
    for user in Level::ALL.iter().map(|level| level.user(&prefix)).chain([my_master]) {
        mysql_async::prelude::Queryable::query_drop(&mut root, format!("DROP USER '{user}'@'%'")).await.unwrap();
    }
}
