//! The test harness, one module per fixture:
//!
//! - [`postgres`]: a PostgreSQL cluster of the test's own (SCRAM and TLS, like RDS);
//! - [`mariadb`]: the machine's MariaDB, and a MariaDB of a test's own with TLS;
//! - [`moto`]: the shared moto, a moto of a test's own running Step Functions
//!   (with a Lambda proxy that injects faults), and RDS instances in it;
//! - [`faults`]: throttling and service errors a test proxy injects;
//! - [`held`]: a workflow whose executions end only when the test says so;
//! - [`machine`]: what a test made on the machine's shared servers, removed when it ends;
//! - [`iam`]: the recorder of AWS actions and the template's grants;
//! - [`web`]: forwarding, a webhook receiver, and the API called through its router;
//! - [`vault`]: a KV v2 Vault of the tests' own;
//! - [`net`]: a database endpoint that resets its first connections (a fail-over),
//!   and a MariaDB one whose errors quote the password statements.
//!
//! Run through `scripts/test`, which starts moto and exports its address.

pub mod faults;
pub mod held;
pub mod iam;
pub mod machine;
pub mod mariadb;
pub mod moto;
pub mod net;
pub mod postgres;
pub mod rds_like;
pub mod vault;
pub mod web;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use faults::{Cut, Faults, FaultyStore};
pub use held::{execution_ended, Held};
pub use iam::{template_actions, template_endpoint_services, ActionRecorder};
pub use machine::{drop_machine_roles, Leaves};
pub use mariadb::{mariadb, mariadb_opts, rds_like_master, MariaDbServer};
pub use moto::{
    aws_config, create_cluster, create_instance, create_table, create_writer, moto_endpoint, moto_instance, other_account,
    own_store_on_kms, provision_state_machine, trusting_role, DeployedFunctions, MotoExecutor, MotoInstance, OtherFunctions,
};
pub use net::{EchoingMariaDb, FlakyPort};
pub use postgres::{pg_connect, PgCluster, PG_BIN, RDS_MASTER_PASSWORD, SUPERUSER_PASSWORD};
pub use rds_like::RdsLike;
pub use vault::{vault_server, Vault, VAULT_TOKEN};
pub use web::{call_api, call_json, webhook_receiver, Received};

/// A loopback port no process listens on now and this test binary has not
/// handed out before: servers started at once never share one. A server
/// started on it can still lose it to another process, so starters retry.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("an address").port();
        if HANDED_OUT.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// A name no other test uses: `t` and 8 hex digits.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

pub fn path_of(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(relative)
}

/// The organisation the end-to-end tests run jobs for.
pub const ORG: &str = "acme";

/// [`ORG`] may act on the deployment's own account (moto's, or the local one).
pub fn acme_at_home() -> dbroles_core::model::account::AccountPolicy {
    dbroles_core::model::account::AccountPolicy { home_orgs: vec![ORG.into()], role_name: None, ..Default::default() }
}

/// A deployment's settings as the end-to-end tests use them: roles `<prefix>_*`,
/// no TLS to the test's servers, a five-second connection time-out, and jobs of
/// [`ORG`] on the deployment's own account.
pub fn settings(prefix: &str) -> dbroles_core::config::Settings {
    dbroles_core::config::Settings {
        role_prefix: prefix.to_string(),
        tls: dbroles_core::engine::TlsConfig::disabled(),
        connect_timeout: std::time::Duration::from_secs(5),
        accounts: acme_at_home(),
        ..Default::default()
    }
}

/// A server to provision as the engine tests reach it: on loopback, no TLS,
/// short time-outs, four databases at once.
pub fn target(family: dbroles_core::engine::Family, port: u16, master: &str, password: &str) -> dbroles_core::engine::Target {
    dbroles_core::engine::Target {
        family,
        host: "127.0.0.1".into(),
        port,
        master_user: master.into(),
        master_password: secrecy::SecretString::from(password),
        tls: dbroles_core::engine::TlsConfig::disabled(),
        connect_timeout: std::time::Duration::from_secs(5),
        statement_timeout: std::time::Duration::from_secs(30),
        max_connections: 4,
    }
}

/// dbroles' own credential store in a temporary directory (kept as long as the directory is).
pub fn own_store() -> (tempfile::TempDir, std::sync::Arc<dbroles_core::secrets::database::DatabaseSecrets>) {
    let dir = tempfile::tempdir().unwrap();
    let store = dbroles_core::store::sqlite::SqliteStore::open(&dir.path().join("store.db")).unwrap();
    (dir, std::sync::Arc::new(dbroles_core::secrets::database::DatabaseSecrets::new(std::sync::Arc::new(store))))
}

/// Where the engine tests keep a role's credentials: the instance `inst`.
pub fn secret_ref(user: &str) -> dbroles_core::secrets::SecretRef {
    dbroles_core::secrets::SecretRef {
        org: "acme".into(),
        instance_id: "inst".into(),
        instance_arn: "arn:aws:rds:us-east-1:123456789012:db:inst".into(),
        job_id: "JOB".into(),
        user: user.into(),
        host: "127.0.0.1".into(),
    }
}

/// A running job as `POST /dbroles/jobs` stores it: reaching its instance's
/// account as the deployment's own (moto's, or the local one), holding its
/// instance's lock.
pub fn stored_job(mut record: dbroles_core::model::job::JobRecord) -> dbroles_core::store::NewJob {
    let account = record.request.instance_arn().account;
    record.access = Some(dbroles_core::model::account::Access::home(&account, record.org()));
    record.lock = record.request.aws.instance_arn.clone();
    let lease_until = dbroles_core::config::Settings::default().lease();
    dbroles_core::store::NewJob { record, idempotency: None, lease_until }
}

/// Every role of a provisioning run completed; the message of the first that did not, if any.
pub fn assert_completed(outcome: &dbroles_core::provision::Outcome) {
    for result in &outcome.results {
        assert_eq!(result.status, dbroles_core::model::job::Phase::Completed, "{}: {}", result.user_role, result.message);
    }
}
